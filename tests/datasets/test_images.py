"""Image loading conversions and the four DIGITS resize modes, pixel by pixel."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kiln.datasets.images import ImageLoadError, decode_image, encode_image, load_image, resize_image, round_half_up
from tests.datasets.conftest import save

RNG = np.random.default_rng(1)


def grey(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def pillow_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    out = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))
    return out.reshape(height, width, image.shape[2])


def on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255
    return rgb * a + 255 * (1 - a)


# ---------------------------------------------------------------- loading and channels


def test_rgb_to_grey_uses_601_weights(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    out = load_image(save(tmp_path / "c.png", rgb), 1)
    assert out.shape == (7, 9, 1) and out.dtype == np.uint8
    assert np.abs(out[..., 0] - grey(rgb)).max() <= 1
    assert out[0, 0, 0] == 76  # 0.299 * 255: red is dark, so the weights are not BGR


def test_grey_to_rgb_repeats(tmp_path: Path) -> None:
    g = RNG.integers(0, 256, (4, 6), dtype=np.uint8)
    out = load_image(save(tmp_path / "g.png", g), 3)
    assert out.shape == (4, 6, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g)


def test_rgba_is_pasted_on_white(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, (5, 5, 3), dtype=np.uint8)
    alpha = RNG.integers(0, 256, (5, 5), dtype=np.uint8)
    alpha[0, 0], alpha[0, 1] = 0, 255
    out = load_image(save(tmp_path / "a.png", np.dstack([rgb, alpha])), 3).astype(int)
    assert np.abs(out - on_white(rgb, alpha)).max() <= 1
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[0, 1]) == tuple(rgb[0, 1])


def test_la_is_pasted_on_white(tmp_path: Path) -> None:
    lum = np.full((3, 3), 40, np.uint8)
    alpha = np.array([[0, 128, 255]] * 3, np.uint8)
    path = tmp_path / "la.png"
    Image.fromarray(np.dstack([lum, alpha]), "LA").save(path)
    out = load_image(path, 1)[..., 0].astype(int)
    np.testing.assert_allclose(out[0], [255, 40 * 128 / 255 + 255 * 127 / 255, 40], atol=1)


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    pal = Image.new("P", (2, 1))
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png", 3)[0].tolist() == [[10, 20, 30], [200, 100, 50]]
    pal.save(tmp_path / "pt.png", transparency=0)
    assert load_image(tmp_path / "pt.png", 3)[0].tolist() == [[255, 255, 255], [200, 100, 50]]


def test_cmyk_and_mode_1(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))  # pure red
    cmyk.save(tmp_path / "c.jpg", quality=100)
    out = load_image(tmp_path / "c.jpg", 3)
    assert out.shape == (2, 2, 3) and out[..., 0].min() > 240 and out[..., 1:].max() < 15
    bits = Image.new("1", (3, 1))
    bits.putpixel((1, 0), 1)
    bits.save(tmp_path / "b.png")
    assert load_image(tmp_path / "b.png", 1)[0, :, 0].tolist() == [0, 255, 0]


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257 * 100, 65535, 30000]], np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")
    out = load_image(tmp_path / "d.png", 1)[0, :, 0]
    assert out.tolist() == [0, 100, 255, round(30000 / 257)]


def test_float_and_int32_images(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F").save(tmp_path / "f.tiff")
    assert load_image(tmp_path / "f.tiff", 1)[0, :, 0].tolist() == [0, 128, 255]
    Image.fromarray(np.array([[0, 100, 255]], np.int32), "I").save(tmp_path / "i.tiff")
    assert load_image(tmp_path / "i.tiff", 1)[0, :, 0].tolist() == [0, 100, 255]


def test_bytes_and_streams(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    data = save(tmp_path / "x.png", rgb).read_bytes()
    np.testing.assert_array_equal(load_image(data, 3), rgb)
    np.testing.assert_array_equal(load_image(io.BytesIO(data), 3), rgb)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (8, 2), (0, 0, 0)).save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg", 3).shape == (8, 2, 3)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"hello, not an image", "not a readable image"),
    ],
)
def test_unreadable_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=message) as err:
        load_image(path, 3)
    assert "bad.png" in str(err.value)


def test_truncated_and_missing(tmp_path: Path) -> None:
    data = save(tmp_path / "ok.png", RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="cut.png"):
        load_image(tmp_path / "cut.png", 3)
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path / "nothing.png", 3)


def test_decompression_bombs_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(tmp_path / "big.png", np.zeros((40, 40), np.uint8))
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(path, 1, max_pixels=1000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's own error (over twice its limit)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(path, 1)


# ---------------------------------------------------------------- resize modes


def test_squash_is_pillow_bilinear() -> None:
    image = RNG.integers(0, 256, (10, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_image(image, 5, 4, "squash"), pillow_bilinear(image, 5, 4))
    grey_image = image[:, :, :1].copy()
    np.testing.assert_array_equal(resize_image(grey_image, 13, 3, "squash"), pillow_bilinear(grey_image, 13, 3))


def test_same_size_is_a_no_op_and_same_aspect_squashes() -> None:
    image = RNG.integers(0, 256, (4, 8, 1), dtype=np.uint8)
    assert resize_image(image, 4, 8, "fill") is image
    for mode in ("crop", "fill", "half_crop"):
        np.testing.assert_array_equal(resize_image(image, 2, 4, mode), pillow_bilinear(image, 2, 4))


def test_crop_keeps_the_centre() -> None:
    wide = np.arange(8, dtype=np.uint8).reshape(2, 4, 1)
    np.testing.assert_array_equal(resize_image(wide, 2, 2, "crop"), wide[:, 1:3])
    tall = np.arange(12, dtype=np.uint8).reshape(6, 2, 1)
    np.testing.assert_array_equal(resize_image(tall, 2, 2, "crop"), tall[2:4])


def test_crop_scales_then_cuts() -> None:
    image = RNG.integers(0, 256, (10, 30, 3), dtype=np.uint8)  # -> 5 x 15, cut columns 5..9
    np.testing.assert_array_equal(resize_image(image, 5, 5, "crop"), pillow_bilinear(image, 5, 15)[:, 5:10])


def test_fill_pads_noise_on_both_sides() -> None:
    image = np.full((2, 8, 1), 7, np.uint8)
    out = resize_image(image, 8, 8, "fill", np.random.default_rng(0))
    assert out.shape == (8, 8, 1)
    np.testing.assert_array_equal(out[3:5], image)  # 3 rows of noise above, 3 below
    for band in (out[:3], out[5:]):
        assert len(np.unique(band)) > 5
    tall = np.full((8, 2, 3), 9, np.uint8)
    out = resize_image(tall, 8, 8, "fill", np.random.default_rng(0))
    np.testing.assert_array_equal(out[:, 3:5], tall)
    assert len(np.unique(out[:, :3])) > 5 and len(np.unique(out[:, 5:])) > 5


def test_fill_keeps_the_padding_even() -> None:
    image = RNG.integers(0, 256, (3, 8, 1), dtype=np.uint8)  # 3 rows -> 4, so 2 + 2 rows of noise
    out = resize_image(image, 8, 8, "fill", np.random.default_rng(0))
    np.testing.assert_array_equal(out[2:6], pillow_bilinear(image, 4, 8))


def test_half_crop_crops_one_side_and_fills_the_other() -> None:
    # ratios 2 and 0.5 -> 1.25: 4x16 becomes 3x13, 3 rows -> 4 for even padding; the crop
    # start round((13 - 8) / 2) = 3 uses DIGITS' half-up rounding (Python 3's round gives 2).
    image = RNG.integers(0, 256, (4, 16, 3), dtype=np.uint8)
    out = resize_image(image, 8, 8, "half_crop", np.random.default_rng(0))
    np.testing.assert_array_equal(out[2:6], pillow_bilinear(image, 4, 13)[:, 3:11])
    assert round_half_up(2.5) == 3


@pytest.mark.parametrize("mode", ["squash", "crop", "fill", "half_crop"])
def test_any_shape_gives_the_requested_size(mode: str) -> None:
    for h, w in [(1, 50), (50, 1), (3, 7), (100, 33), (9, 9), (2, 3)]:
        image = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for height, width in [(10, 10), (5, 12), (12, 5)]:
            assert resize_image(image, height, width, mode, np.random.default_rng(0)).shape == (height, width, 3)


def test_noise_follows_the_generator() -> None:
    image = RNG.integers(0, 256, (4, 16, 3), dtype=np.uint8)
    a = resize_image(image, 16, 16, "fill", np.random.default_rng(5))
    b = resize_image(image, 16, 16, "fill", np.random.default_rng(5))
    c = resize_image(image, 16, 16, "fill", np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_encode_decode_round_trip() -> None:
    image = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(encode_image(image, "png"), 3), image)
    smooth = np.full((16, 16, 1), 120, np.uint8)
    assert np.abs(decode_image(encode_image(smooth, "jpg"), 1).astype(int) - 120).max() <= 2
