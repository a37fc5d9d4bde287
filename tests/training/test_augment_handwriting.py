"""The augmentations for real handwriting (shift, shear, stroke width, blur, brightness) do what
their fields say, per image, for light-on-dark and dark-on-light digits alike."""

from __future__ import annotations

import pytest
import torch

from kiln.training.augment import Augmenter, blur_blend, stroke_width
from kiln.training.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def augment(x: torch.Tensor, seed: int = 0, **fields: object) -> torch.Tensor:
    return Augmenter(TrainConfig(**fields), x.shape[1])(x, torch.Generator().manual_seed(seed))


def bar(n: int = 32, size: int = 21, width: int = 3, light: bool = True) -> torch.Tensor:
    """A vertical stroke `width` pixels wide in the middle: light on dark, or dark on light."""
    x = torch.zeros(n, 1, size, size)
    lo = (size - width) // 2
    x[:, :, 3:-3, lo : lo + width] = 255
    return x if light else 255 - x


def stroke_pixels(x: torch.Tensor, light: bool = True) -> torch.Tensor:
    """Per image, how many pixels belong to the stroke (over half-way to the stroke's value)."""
    return ((x > 127) if light else (x < 128)).flatten(1).sum(1)


def centre_column(x: torch.Tensor) -> torch.Tensor:
    cols = torch.arange(x.shape[3], dtype=torch.float32)
    mass = x.sum((1, 2))
    return (mass * cols).sum(1) / mass.sum(1)


def test_every_new_field_activates_and_is_reproducible() -> None:
    x = bar()
    for name, value in [
        ("aug_shift", 0.1),
        ("aug_shear", 15),
        ("aug_stroke", 1),
        ("aug_blur", 1),
        ("aug_brightness", 0.2),
    ]:
        augmenter = Augmenter(TrainConfig(**{name: value}), 1)
        assert augmenter.active, name
        out = augment(x, seed=3, **{name: value})
        assert not torch.equal(out, x), name
        assert torch.equal(out, augment(x, seed=3, **{name: value})), name
        assert out.min() >= -1e-3 and out.max() <= 255 + 1e-3, name


def test_stroke_width_thickens_and_thins_both_polarities() -> None:
    for light in (True, False):
        x = bar(n=4, light=light)
        base = stroke_pixels(x, light)
        grow = 1.0 if light else -1.0  # dark strokes on light paper grow by erosion
        thick = stroke_pixels(stroke_width(x, torch.full((4,), grow)), light)
        thin = stroke_pixels(stroke_width(x, torch.full((4,), -grow)), light)
        assert (thick > base).all() and (thin < base).all()
        # two pixels either side: the 3-pixel bar becomes 7 wide (and 4 rows longer)
        two = stroke_pixels(stroke_width(x, torch.full((4,), 2 * grow)), light)
        assert (two == 7 * (15 + 4)).all()


def test_stroke_width_fractions_blend_and_zero_is_identity() -> None:
    x = bar(n=3)
    amounts = torch.tensor([0.0, 0.5, 1.0])
    out = stroke_width(x, amounts)
    assert torch.equal(out[0], x[0])
    one = stroke_width(x[2:], torch.ones(1))
    torch.testing.assert_close(out[1], (x[1] + one[0]) / 2)


def test_random_stroke_widths_differ_per_image() -> None:
    out = augment(bar(n=64), aug_stroke=1.5)
    sums = out.flatten(1).sum(1)
    assert (sums > bar(1).sum()).any() and (sums < bar(1).sum()).any()


def test_shift_moves_each_image_within_the_fraction() -> None:
    x = bar(n=64, size=41)
    out = augment(x, aug_shift=0.1)
    offsets = centre_column(out) - 20.0
    assert offsets.abs().max() <= 0.1 * 41 + 0.5
    assert offsets.max() > 2 and offsets.min() < -2  # both ways, each image its own


def test_dark_on_light_is_not_framed_in_black() -> None:
    """Pixels from outside the image repeat its border: shifted paper stays paper."""
    x = torch.full((16, 1, 28, 28), 255.0)
    x[:, :, 9:19, 12:16] = 0  # a dark stroke well inside the frame
    out = augment(x, aug_shift=0.2, aug_rot=20, aug_shear=10)
    assert (out < 128).flatten(1).sum(1).min() > 20  # the stroke is still there
    border = torch.cat([out[:, :, 0], out[:, :, -1], out[:, :, :, 0], out[:, :, :, -1]], 2)
    assert border.min() > 200


def test_shear_slants_a_vertical_stroke() -> None:
    x = bar(n=32, size=41, width=3)
    out = augment(x, aug_shear=30)
    top, bottom = centre_column(out[:, :, 5:12]), centre_column(out[:, :, -12:-5])
    slant = (top - bottom).abs()
    assert slant.max() > 5  # tan(30 degrees) * ~28 rows apart ~ up to 16 pixels
    assert (centre_column(out) - 20).abs().max() < 1  # about the centre: no shift


def test_blur_blend_keeps_the_mean_and_spreads_the_stroke() -> None:
    x = torch.zeros(2, 1, 41, 41)
    x[:, :, 10:30, 19:22] = 255  # far enough from the edges that nothing blurs out of the frame
    out = blur_blend(x, 1.5, torch.tensor([0.0, 1.0]).view(2, 1, 1, 1))
    assert torch.equal(out[0], x[0])
    torch.testing.assert_close(out[1].sum(), x[1].sum(), rtol=1e-4, atol=0)
    assert (out[1] > 0).sum() > (x[1] > 0).sum() and out[1].max() < 255


def test_brightness_shifts_within_the_range() -> None:
    x = torch.full((64, 1, 4, 4), 128.0)
    out = augment(x, aug_brightness=0.2)
    shift = out[:, 0, 0, 0] - 128
    assert shift.abs().max() <= 0.2 * 255 + 1e-3 and shift.max() > 20 and shift.min() < -20
    assert torch.equal(out, out[:, :, :1, :1].expand_as(out))  # one shift per image


def test_a_share_of_images_stays_clean_but_for_inversion() -> None:
    x = bar(n=64)
    shape_and_photo = dict(aug_shift=0.2, aug_stroke=1.0, aug_blur=1.0, aug_contrast=0.5)
    out = augment(x, aug_clean=0.5, aug_invert=0.5, **shape_and_photo)
    clean = [i for i in range(64) if torch.equal(out[i], x[i]) or torch.equal(out[i], 255 - x[i])]
    assert 16 < len(clean) < 48  # about half, each image drawn on its own
    assert any(torch.equal(out[i], 255 - x[i]) for i in clean)  # inversion still applies to them
    assert torch.equal(augment(x, aug_clean=1.0, **shape_and_photo), x)
    assert not Augmenter(TrainConfig(aug_clean=0.5), 1).active  # nothing else asked for: nothing to do


@pytest.mark.parametrize(
    "fields, name",
    [
        ({"aug_shift": 0.6}, "aug_shift"),
        ({"aug_shear": -1}, "aug_shear"),
        ({"aug_stroke": 4}, "aug_stroke"),
        ({"aug_blur": float("nan")}, "aug_blur"),
        ({"aug_brightness": 2}, "aug_brightness"),
        ({"aug_clean": 1.5}, "aug_clean"),
    ],
)
def test_bad_settings_name_the_field(fields: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Augmenter(TrainConfig(**fields), 1)
