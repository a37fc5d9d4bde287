"""Data augmentation on whole batches, as DIGITS' Torch and TensorFlow back ends offered it.

The batch is float NCHW at 0-255 pixel scale, before mean subtraction, on any device. Every
random choice is made per image but drawn for the whole batch at once, from the given generator
(on its own device), so that a seeded generator gives the same batch every time.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F

from kiln.fields import Field

from .config import TrainConfig

# The augmentations this module implements, with the labels and ranges forms show
# (the ranges are DIGITS' form bounds).
FLIPS = {"none": "None", "fliplr": "Horizontal", "flipud": "Vertical", "fliplrud": "Horizontal and/or vertical"}
QUARTER_TURN_LABELS = {
    "none": "None",
    "rot90": "0, 90 or 270 degrees",
    "rot180": "0 or 180 degrees",
    "rotall": "0, 90, 180 or 270 degrees",
}
QUARTER_TURNS = {"none": (0,), "rot90": (0, 1, 3), "rot180": (0, 2), "rotall": (0, 1, 2, 3)}
FIELDS = {
    f.name: f
    for f in (
        Field("aug_flip", "Flipping", str, "random flips", choices=FLIPS),
        Field("aug_quad_rot", "Quadrilateral rotation", str, "random quarter turns", choices=QUARTER_TURN_LABELS),
        Field("aug_rot", "Rotation (± degrees)", float, "random rotation, degrees either way", low=0, high=180),
        Field("aug_scale", "Rescale (stddev)", float, "stddev of the random rescale factor", low=0, high=1),
        Field("aug_noise", "Noise (stddev)", float, "stddev of gaussian noise on [0, 1] pixels", low=0, high=1),
        Field("aug_contrast", "Contrast (factor)", float, "contrast factor drawn from U[1-f, 1+f]", low=0, high=5),
        Field(
            "aug_invert", "Invert (probability)", float, "probability of inverting an image (255 - x)", low=0, high=1
        ),
        Field(
            "aug_shift",
            "Shift (fraction)",
            float,
            "random shift, fraction of the image size either way",
            low=0,
            high=0.5,
        ),
        Field("aug_shear", "Shear (± degrees)", float, "random horizontal shear, degrees either way", low=0, high=45),
        Field(
            "aug_stroke",
            "Stroke width (± pixels)",
            float,
            "random grey dilation or erosion, pixels on each side of a stroke (fractions blend)",
            low=0,
            high=3,
        ),
        Field(
            "aug_blur", "Blur (max sigma, pixels)", float, "gaussian blur of random strength up to sigma", low=0, high=5
        ),
        Field(
            "aug_brightness",
            "Brightness (fraction)",
            float,
            "brightness shift drawn from U[-b, b] of the pixel range",
            low=0,
            high=1,
        ),
        Field(
            "aug_clean",
            "Left unaugmented (share)",
            float,
            "share of images that skip the shape and photo augmentations (flips, turns and inversion still apply)",
            low=0,
            high=1,
        ),
        Field("aug_hsv_use", "HSV shifting", bool, "random hue/saturation/value shifts (colour images)"),
        Field("aug_hsv_h", "Hue", float, "HSV: hue shift stddev", low=0, high=0.5),
        Field("aug_hsv_s", "Saturation", float, "HSV: saturation shift stddev", low=0, high=0.5),
        Field("aug_hsv_v", "Value", float, "HSV: value shift stddev", low=0, high=0.5),
    )
}


def check_augmentations(config: TrainConfig) -> None:
    """Raise FieldError naming the augmentation field that is out of range."""
    for name, f in FIELDS.items():
        f.check(getattr(config, name))


class Augmenter:
    """``Augmenter(config, channels)(batch, generator)`` returns an augmented copy of the batch."""

    def __init__(self, config: TrainConfig, channels: int, mirror: bool = False) -> None:
        """``mirror``: the network text's data layer asks for random left-right flips (Caffe's ``mirror``)."""
        check_augmentations(config)
        c = config
        self.flip_lr = mirror or c.aug_flip in ("fliplr", "fliplrud")
        self.flip_ud = c.aug_flip in ("flipud", "fliplrud")
        self.quarter_turns = QUARTER_TURNS[c.aug_quad_rot]
        self.rotation, self.scale = float(c.aug_rot), float(c.aug_scale)
        self.noise, self.contrast, self.invert = float(c.aug_noise), float(c.aug_contrast), float(c.aug_invert)
        self.shift, self.shear, self.stroke = float(c.aug_shift), float(c.aug_shear), float(c.aug_stroke)
        self.blur, self.brightness, self.clean = float(c.aug_blur), float(c.aug_brightness), float(c.aug_clean)
        self.hsv = (c.aug_hsv_h, c.aug_hsv_s, c.aug_hsv_v) if c.aug_hsv_use and channels == 3 else None
        self.notes: list[str] = []  # what was asked for but cannot apply to these images
        if c.aug_hsv_use and channels != 3:
            self.notes.append(f"HSV shifting needs colour images; skipped for {channels}-channel images")
        if self.hsv is not None and not any(self.hsv):
            self.hsv = None
        self.active = any(
            (
                self.flip_lr,
                self.flip_ud,
                len(self.quarter_turns) > 1,
                self.rotation,
                self.scale,
                self.shift,
                self.shear,
                self.stroke,
                self.blur,
                self.brightness,
                self.noise,
                self.contrast,
                self.invert,
                self.hsv,
            )
        )

    def describe(self) -> str:
        """The augmentations in effect, for the training log ("none" when inactive)."""
        parts = [
            ("flip left-right" if self.flip_lr else ""),
            ("flip up-down" if self.flip_ud else ""),
            (f"quarter turns {self.quarter_turns}" if len(self.quarter_turns) > 1 else ""),
            (f"rotation ±{self.rotation:g}°" if self.rotation else ""),
            (f"rescale stddev {self.scale:g}" if self.scale else ""),
            (f"shear ±{self.shear:g}°" if self.shear else ""),
            (f"shift ±{self.shift:g}" if self.shift else ""),
            (f"stroke width ±{self.stroke:g} px" if self.stroke else ""),
            (f"invert p={self.invert:g}" if self.invert else ""),
            (f"contrast ±{self.contrast:g}" if self.contrast else ""),
            (f"brightness ±{self.brightness:g}" if self.brightness else ""),
            (f"blur sigma ≤{self.blur:g} px" if self.blur else ""),
            ("HSV shifts" if self.hsv is not None else ""),
            (f"noise stddev {self.noise:g}" if self.noise else ""),
            (f"{self.clean:.0%} of images left unaugmented but for flips, turns and inversion" if self.clean else ""),
        ]
        return ", ".join(p for p in parts if p) or "none"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.active:
            return x
        if x.ndim != 4 or not x.is_floating_point():
            raise TypeError(f"augmentation needs a float NCHW batch, got {x.dtype} of shape {tuple(x.shape)}")
        draw = _Draws(generator, x)
        x = self._flip(x, draw)
        x = self._quarter_turn(x, draw)
        if self.invert:  # before the rest, whose random ranges are the same for either polarity
            x = torch.where(draw.uniform() < self.invert, 255 - x, x)
        keep = draw.uniform() < self.clean if self.clean else None
        before = x
        if self.stroke:
            x = stroke_width(x, (draw.uniform() * 2 - 1) * self.stroke)
        x = self._rotate_scale(x, draw)
        if self.contrast:
            x = self._contrast(x, draw)
        if self.brightness:
            x = (x + (draw.uniform() * 2 - 1) * (self.brightness * 255)).clamp_(0, 255)
        if self.blur:
            x = blur_blend(x, self.blur, draw.uniform())
        if self.hsv is not None:
            x = self._hsv_shift(x, draw)
        if self.noise:
            x = (x + draw.normal(x.shape) * (self.noise * 255)).clamp_(0, 255)
        return x if keep is None else torch.where(keep, before, x)

    def _flip(self, x: torch.Tensor, draw: _Draws) -> torch.Tensor:
        if self.flip_lr:
            x = torch.where(draw.uniform() < 0.5, x.flip(3), x)
        if self.flip_ud:
            x = torch.where(draw.uniform() < 0.5, x.flip(2), x)
        return x

    def _quarter_turn(self, x: torch.Tensor, draw: _Draws) -> torch.Tensor:
        turns = self.quarter_turns
        if len(turns) > 1 and x.shape[2] != x.shape[3]:
            turns = tuple(k for k in turns if k % 2 == 0)  # 90 degrees would change the shape
            self._note("90 and 270 degree rotations need square images; skipped")
        if len(turns) < 2:
            return x
        index = (draw.uniform() * len(turns)).long().clamp_(max=len(turns) - 1)
        chosen = torch.tensor(turns, device=x.device)[index]  # (N, 1, 1, 1) quarter turns
        for k in turns[1:]:
            x = torch.where(chosen == k, torch.rot90(x, k, (2, 3)), x)
        return x

    def _rotate_scale(self, x: torch.Tensor, draw: _Draws) -> torch.Tensor:
        """One bilinear resampling per batch: rotation by U[-r, r] degrees, zoom by N(1, scale),
        shear by U[-s, s] degrees and shift by U[-f, f] of the size. Pixels from outside repeat
        the border, so a dark digit on light paper is not framed in black."""
        if not (self.rotation or self.scale or self.shift or self.shear):
            return x
        n, _, h, w = x.shape
        angle = (draw.uniform() * 2 - 1).view(n) * math.radians(self.rotation)
        zoom = (1 + draw.normal((n,)) * self.scale).clamp_(min=0.25)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        shear = torch.tan((draw.uniform() * 2 - 1).view(n) * math.radians(self.shear)) if self.shear else 0 * cos
        # in pixel units: rotate(angle) @ shear_x / zoom, so non-square images are not sheared by
        # normalised coordinates; then to normalised units, where a shift of f is 2f
        a, b, c, d = cos, cos * shear - sin, sin, sin * shear + cos
        tx, ty = (((draw.uniform() * 2 - 1).view(n) * 2 * self.shift) if self.shift else 0 * cos for _ in "xy")
        theta = torch.stack([torch.stack([a, b * h / w, tx], 1), torch.stack([c * w / h, d, ty], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _contrast(self, x: torch.Tensor, draw: _Draws) -> torch.Tensor:
        """Scale each image's distance from its per-channel mean by U[1-f, 1+f] (never below 0)."""
        low, high = max(0.0, 1 - self.contrast), 1 + self.contrast
        factor = low + draw.uniform() * (high - low)
        mean = x.mean((2, 3), keepdim=True)
        return ((x - mean) * factor + mean).clamp_(0, 255)

    def _hsv_shift(self, x: torch.Tensor, draw: _Draws) -> torch.Tensor:
        """Shift hue (wrapping), saturation and value by normal amounts per image."""
        assert self.hsv is not None
        h, s, v = _rgb_to_hsv(x.clamp(0, 255) / 255)
        dh, ds, dv = (draw.normal((x.shape[0], 1, 1)) * sigma for sigma in self.hsv)
        h = torch.remainder(h + dh, 1.0)
        return _hsv_to_rgb(h, (s + ds).clamp_(0, 1), (v + dv).clamp_(0, 1)) * 255

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            warnings.warn(text, stacklevel=3)


def stroke_width(x: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Grey dilation (amount > 0) or erosion (< 0) by |amount| pixels on each side, per image.

    Whole steps are 3x3 max (or min) filters of the whole batch; a fraction blends two steps. Light
    strokes on dark grow with dilation, dark strokes on light with erosion: a symmetric range
    thickens and thins both kinds.
    """
    steps = int(math.ceil(float(amount.abs().max())))
    if steps == 0:
        return x
    grown, shrunk = [x], [x]
    for _ in range(steps):
        grown.append(_filter3(grown[-1], torch.maximum))
        shrunk.append(_filter3(shrunk[-1], torch.minimum))
    # levels -steps .. +steps; each image takes the two around its amount (hat weights, no gather)
    position = amount.view(-1, 1, 1, 1).to(x.dtype) + steps
    out = torch.zeros_like(x)
    for k, level in enumerate(shrunk[:0:-1] + grown):
        weight = (1 - (position - k).abs()).clamp_(min=0)
        out.addcmul_(weight.expand_as(level), level)
    return out


def _filter3(x: torch.Tensor, pick: Any) -> torch.Tensor:
    """3x3 grey max or min filter as two separable passes of slices (max_pool2d is ~3x slower here)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")  # the edge repeated: the same as ignoring outside
    rows = pick(pick(p[:, :, :, :-2], p[:, :, :, 1:-1]), p[:, :, :, 2:])
    return pick(pick(rows[:, :, :-2], rows[:, :, 1:-1]), rows[:, :, 2:])


def blur_blend(x: torch.Tensor, sigma: float, strength: torch.Tensor) -> torch.Tensor:
    """A gaussian blur of ``sigma`` pixels (taps to 2 sigma) blended in by ``strength`` in [0, 1]
    per image: two separable passes of shifted slices for the whole batch, edges repeated."""
    radius = max(1, int(math.ceil(2 * sigma)))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma) ** 2)
    k = (taps / taps.sum()).tolist()
    h, w = x.shape[2], x.shape[3]
    p = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    rows = p[:, :, :, :w] * k[0]
    for i in range(1, 2 * radius + 1):
        rows.add_(p[:, :, :, i : i + w], alpha=k[i])
    blurred = rows[:, :, :h] * k[0]
    for i in range(1, 2 * radius + 1):
        blurred.add_(rows[:, :, i : i + h], alpha=k[i])
    return x.lerp(blurred, strength.to(x.dtype))


class _Draws:
    """Random numbers from ``generator`` on its own device, delivered on the batch's device."""

    def __init__(self, generator: torch.Generator | None, x: torch.Tensor) -> None:
        self.generator, self.n, self.device, self.dtype = generator, x.shape[0], x.device, x.dtype
        self.source = generator.device if generator is not None else x.device

    def uniform(self) -> torch.Tensor:
        """One U[0, 1) per image, shaped (N, 1, 1, 1) to broadcast over a batch."""
        u = torch.rand((self.n, 1, 1, 1), generator=self.generator, device=self.source)
        return u.to(self.device, self.dtype)

    def normal(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        z = torch.randn(tuple(shape), generator=self.generator, device=self.source)
        return z.to(self.device, self.dtype)


def _rgb_to_hsv(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) in [0, 1] to hue, saturation, value, each (N, H, W) in [0, 1]."""
    r, g, b = rgb.unbind(1)
    value, argmax = rgb.max(1)
    delta = value - rgb.min(1).values
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(
        argmax == 0,
        torch.remainder((g - b) / safe, 6),
        torch.where(argmax == 1, (b - r) / safe + 2, (r - g) / safe + 4),
    )
    hue = torch.where(delta > 0, hue / 6, torch.zeros_like(hue))
    saturation = torch.where(
        value > 0, delta / torch.where(value > 0, value, torch.ones_like(value)), torch.zeros_like(value)
    )
    return hue, saturation, value


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_rgb_to_hsv`: each channel is v - v*s*clamp(min(k, 4-k), 0, 1)."""
    channels = []
    for offset in (5, 3, 1):  # red, green, blue
        k = torch.remainder(offset + h * 6, 6)
        channels.append(v - v * s * torch.clamp(torch.minimum(k, 4 - k), 0, 1))
    return torch.stack(channels, 1)
