"""Batch augmentations do what DIGITS' options say, per image, reproducibly."""

from __future__ import annotations

import colorsys
import math

import pytest
import torch

from kiln.training.augment import Augmenter, _hsv_to_rgb, _rgb_to_hsv
from kiln.training.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def augment(x: torch.Tensor, seed: int = 0, **fields: object) -> torch.Tensor:
    augmenter = Augmenter(TrainConfig(**fields), x.shape[1])
    return augmenter(x, torch.Generator().manual_seed(seed))


def asymmetric(n: int = 64, h: int = 6, w: int = 6, channels: int = 1) -> torch.Tensor:
    """Every pixel distinct, so any flip or turn is visible."""
    image = torch.arange(channels * h * w, dtype=torch.float32).view(1, channels, h, w)
    return image.repeat(n, 1, 1, 1)


def which(out: torch.Tensor, candidates: dict[str, torch.Tensor]) -> set[str]:
    """The candidate each image of the batch equals exactly (fails if one equals none)."""
    found = set()
    for image in out:
        names = [name for name, c in candidates.items() if torch.equal(image, c)]
        assert names, "an image is none of the expected transforms"
        found.add(names[0])
    return found


def centroid(image: torch.Tensor) -> torch.Tensor:
    """(row, column) centre of mass of a 2-D image."""
    rows, cols = torch.meshgrid(torch.arange(image.shape[0]), torch.arange(image.shape[1]), indexing="ij")
    total = image.sum()
    return torch.stack([(rows * image).sum() / total, (cols * image).sum() / total])


def test_inactive_returns_the_same_tensor() -> None:
    augmenter = Augmenter(TrainConfig(), 3)
    x = torch.rand(2, 3, 4, 4)
    assert not augmenter.active
    assert augmenter(x, torch.Generator()) is x
    assert not Augmenter(TrainConfig(aug_hsv_use=True), 1).active  # HSV needs colour


def test_active_never_changes_the_input() -> None:
    x = asymmetric()
    before = x.clone()
    augment(x, aug_flip="fliplrud", aug_quad_rot="rotall", aug_noise=0.1, aug_invert=0.5)
    assert torch.equal(x, before)


def test_fliplr_mirrors_each_image_independently() -> None:
    x = asymmetric()
    image = x[0]
    assert which(augment(x, aug_flip="fliplr"), {"same": image, "lr": image.flip(2)}) == {"same", "lr"}
    assert which(augment(x, aug_flip="flipud"), {"same": image, "ud": image.flip(1)}) == {"same", "ud"}
    both = {"same": image, "lr": image.flip(2), "ud": image.flip(1), "lrud": image.flip(1).flip(2)}
    assert which(augment(x, aug_flip="fliplrud"), both) == set(both)


def test_fliplr_really_mirrors_left_and_right() -> None:
    x = torch.zeros(64, 1, 3, 4)
    x[:, :, :, 0] = 255  # a bright left column
    out = augment(x, aug_flip="fliplr")
    flipped = out[:, 0, :, 3].eq(255).all(1)
    assert flipped.any() and (~flipped).any()
    assert torch.equal(out[flipped, 0, :, 0], torch.zeros(int(flipped.sum()), 3))


def test_rot180_is_two_quarter_turns() -> None:
    x = asymmetric()
    image = x[0]
    half = torch.rot90(torch.rot90(image, 1, (1, 2)), 1, (1, 2))
    assert which(augment(x, aug_quad_rot="rot180"), {"same": image, "half": half}) == {"same", "half"}


def test_rot90_and_rotall_choose_among_their_turns() -> None:
    x = asymmetric()
    turns = {k: torch.rot90(x[0], k, (1, 2)) for k in range(4)}
    assert which(augment(x, aug_quad_rot="rot90"), turns) == {0, 1, 3}
    assert which(augment(x, aug_quad_rot="rotall"), turns) == {0, 1, 2, 3}


def test_quarter_turns_of_non_square_images_keep_their_shape() -> None:
    x = asymmetric(h=4, w=6)
    augmenter = Augmenter(TrainConfig(aug_quad_rot="rotall"), 1)
    with pytest.warns(UserWarning, match="square"):
        out = augmenter(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert which(out, {0: x[0], 2: torch.rot90(x[0], 2, (1, 2))}) == {0, 2}
    assert any("square" in note for note in augmenter.notes)


def test_tiny_rotation_is_the_identity_even_when_not_square() -> None:
    x = torch.rand(4, 3, 8, 12) * 255
    torch.testing.assert_close(augment(x, aug_rot=1e-4), x, atol=0.05, rtol=0)


def test_rotation_turns_about_the_centre_without_shearing() -> None:
    x = torch.zeros(16, 1, 41, 61)
    x[:, :, 19:22, 44:47] = 255  # a blob 15 pixels right of the centre (20, 30)
    out = augment(x, aug_rot=180)
    centre = torch.tensor([20.0, 30.0])
    angles = []
    for image in out[:, 0]:
        offset = centroid(image) - centre
        assert offset.norm().item() == pytest.approx(15.0, abs=0.3)
        angles.append(math.atan2(offset[0].item(), offset[1].item()))
    assert max(angles) - min(angles) > 1.0  # each image got its own angle


def test_scaling_moves_points_along_their_ray() -> None:
    x = torch.zeros(16, 1, 41, 41)
    x[:, :, 19:22, 29:32] = 255  # 10 pixels right of the centre
    out = augment(x, aug_scale=0.2)
    distances = []
    for image in out[:, 0]:
        offset = centroid(image) - torch.tensor([20.0, 20.0])
        assert abs(offset[0].item()) < 0.2  # stays on the horizontal ray
        distances.append(offset[1].item())
    assert max(distances) - min(distances) > 2.0


def test_noise_has_the_requested_stddev_on_the_unit_scale() -> None:
    x = torch.full((128, 1, 32, 32), 128.0)
    out = augment(x, aug_noise=0.03)
    assert (out - x).std().item() == pytest.approx(0.03 * 255, rel=0.01)
    assert (out - x).mean().item() == pytest.approx(0.0, abs=0.1)


def test_invert() -> None:
    x = torch.rand(8, 1, 5, 5) * 255
    assert torch.equal(augment(x, aug_invert=1.0), 255 - x)
    out = augment(asymmetric(), aug_invert=0.5)
    image = asymmetric(1)[0]
    assert which(out, {"same": image, "inverted": 255 - image}) == {"same", "inverted"}


def test_contrast_keeps_each_mean_and_varies_the_spread() -> None:
    x = 100 + torch.rand(32, 3, 8, 8) * 50
    out = augment(x, aug_contrast=0.5)
    torch.testing.assert_close(out.mean((2, 3)), x.mean((2, 3)), atol=1e-3, rtol=0)
    ratio = out.std((1, 2, 3)) / x.std((1, 2, 3))
    assert ratio.min() >= 0.5 - 1e-4 and ratio.max() <= 1.5 + 1e-4
    assert ratio.max() - ratio.min() > 0.3


def test_hsv_conversion_matches_colorsys() -> None:
    rgb = torch.rand(2, 3, 4, 4)
    h, s, v = _rgb_to_hsv(rgb)
    for n, i, j in [(0, 0, 0), (1, 2, 3), (0, 3, 1)]:
        expected = colorsys.rgb_to_hsv(*rgb[n, :, i, j].tolist())
        assert (h[n, i, j].item(), s[n, i, j].item(), v[n, i, j].item()) == pytest.approx(expected, abs=1e-6)
    torch.testing.assert_close(_hsv_to_rgb(h, s, v), rgb)


def test_hue_shift_keeps_value_and_greys() -> None:
    x = torch.rand(16, 3, 6, 6) * 255
    x[:, :, 0, 0] = 90.0  # a grey pixel has no hue to shift
    out = augment(x, aug_hsv_use=True, aug_hsv_h=0.2, aug_hsv_s=0, aug_hsv_v=0)
    torch.testing.assert_close(out.max(1).values, x.max(1).values, atol=1e-3, rtol=0)
    torch.testing.assert_close(out[:, :, 0, 0], x[:, :, 0, 0], atol=1e-3, rtol=0)
    assert (out - x).abs().max() > 10


def test_seeded_generator_is_deterministic() -> None:
    fields = dict(
        aug_flip="fliplrud",
        aug_quad_rot="rotall",
        aug_rot=20,
        aug_scale=0.1,
        aug_noise=0.05,
        aug_contrast=0.4,
        aug_hsv_use=True,
        aug_invert=0.3,
    )
    x = torch.rand(8, 3, 16, 16) * 255
    assert torch.equal(augment(x, seed=7, **fields), augment(x, seed=7, **fields))
    assert not torch.equal(augment(x, seed=7, **fields), augment(x, seed=8, **fields))


@pytest.mark.parametrize(
    "fields, name",
    [
        ({"aug_flip": "sideways"}, "aug_flip"),
        ({"aug_quad_rot": "rot45"}, "aug_quad_rot"),
        ({"aug_rot": 200}, "aug_rot"),
        ({"aug_noise": -0.1}, "aug_noise"),
        ({"aug_invert": 1.5}, "aug_invert"),
    ],
)
def test_bad_settings_name_the_field(fields: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Augmenter(TrainConfig(**fields), 3)
