"""Stress tests made from MNIST's own test split: what real handwriting does that MNIST does not.

Each set is the 10,000 test digits transformed one way (uint8, N x 28 x 28 x 1, same labels).
The transforms use Pillow and NumPy, not kiln's augmentation code, so a recipe is not judged by
the very functions it trains with. Random parameters come from a fixed seed: every run judges
on the same images.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

Transform = Callable[[Image.Image, np.random.Generator], Image.Image]


def _affine(
    img: Image.Image, angle: float = 0.0, scale: float = 1.0, shear: float = 0.0, dx: float = 0.0, dy: float = 0.0
) -> Image.Image:
    """Rotate (degrees), scale, shear (degrees) about the centre, then shift (pixels); edges repeat."""
    w, h = img.size
    cx, cy = w / 2, h / 2
    a, k = math.radians(angle), math.tan(math.radians(shear))
    cos, sin = math.cos(a) / scale, math.sin(a) / scale
    # output -> input: inverse of shift o rotate o shear o scale, about the centre
    m = np.array([[cos, cos * k - sin], [sin, sin * k + cos]])
    ox, oy = cx + dx, cy + dy
    c = cx - m[0, 0] * ox - m[0, 1] * oy, cy - m[1, 0] * ox - m[1, 1] * oy
    coeffs = (m[0, 0], m[0, 1], c[0], m[1, 0], m[1, 1], c[1])
    fill = int(np.asarray(img)[0, 0])  # the background (a corner pixel), not black
    return img.transform((w, h), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BICUBIC, fillcolor=fill)


def _contrast(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Grey paper and grey ink: the background at 40-110, the strokes at 140-220, a little noise."""
    x = np.asarray(img, dtype=np.float32) / 255
    bg, ink = rng.uniform(40, 110), rng.uniform(140, 220)
    y = bg + (ink - bg) * x + rng.normal(0, 6, x.shape)
    return Image.fromarray(np.clip(y, 0, 255).round().astype(np.uint8))


def _low_resolution(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    small = img.resize((12, 12), Image.Resampling.BOX)
    return small.resize(img.size, Image.Resampling.BILINEAR)


def _off_centre(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Shifted 3-5 pixels in a random direction (the digit stays inside the frame)."""
    angle, dist = rng.uniform(0, 2 * math.pi), rng.uniform(3, 5)
    return _affine(img, dx=dist * math.cos(angle), dy=dist * math.sin(angle))


def _rotate_scale(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return _affine(img, angle=rng.uniform(-15, 15), scale=rng.uniform(0.8, 1.2), shear=rng.uniform(-10, 10))


def _fill_frame(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Cropped to the digit and resized to fill the frame (aspect kept, a 2-pixel margin), as a
    photo cropped tightly around a digit would be."""
    x = np.asarray(img)
    rows, cols = np.flatnonzero(x.max(1) > 30), np.flatnonzero(x.max(0) > 30)
    if not len(rows):
        return img
    crop = img.crop((cols[0], rows[0], cols[-1] + 1, rows[-1] + 1))
    side = 24 / max(crop.size)
    crop = crop.resize((max(1, round(crop.width * side)), max(1, round(crop.height * side))), Image.Resampling.BICUBIC)
    out = Image.new("L", img.size, 0)
    out.paste(crop, ((img.width - crop.width) // 2, (img.height - crop.height) // 2))
    return out


def _real_ish(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A bit of everything at once, each drawn per image: stroke width, pose, blur, paper and ink."""
    stroke = rng.choice(["thin", "none", "thick"], p=[0.25, 0.4, 0.35])
    if stroke == "thick":
        img = img.filter(ImageFilter.MaxFilter(3))
    elif stroke == "thin":
        img = img.filter(ImageFilter.MinFilter(3)) if rng.random() < 0.3 else _min2(img)
    img = _affine(
        img,
        angle=rng.uniform(-12, 12),
        scale=rng.uniform(0.8, 1.2),
        shear=rng.uniform(-10, 10),
        dx=rng.uniform(-3, 3),
        dy=rng.uniform(-3, 3),
    )
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))
    return _contrast(img, rng)


def _min2(img: Image.Image) -> Image.Image:
    """Erosion by a 2x2 square: strokes one pixel thinner (a 3x3 one takes two)."""
    x = np.asarray(img)
    p = np.pad(x, ((0, 1), (0, 1)), mode="edge")
    return Image.fromarray(np.minimum.reduce([p[:-1, :-1], p[1:, :-1], p[:-1, 1:], p[1:, 1:]]))


def _inverted(transform: Transform) -> Transform:
    return lambda img, rng: Image.fromarray(255 - np.asarray(transform(img, rng)))


def _identity(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img


# name -> (what it is, the transform of a light-on-dark MNIST digit)
STRESSES: dict[str, tuple[str, Transform]] = {
    "mnist": ("MNIST's test split as it is", _identity),
    "dark_on_light": ("inverted: dark digits on light paper", _inverted(_identity)),
    "thick": ("strokes 2 pixels thicker (3x3 grey dilation)", lambda img, rng: img.filter(ImageFilter.MaxFilter(3))),
    "thin": ("strokes 1 pixel thinner (2x2 grey erosion)", lambda img, rng: _min2(img)),
    "blur": ("gaussian blur, sigma 1.2 pixels", lambda img, rng: img.filter(ImageFilter.GaussianBlur(1.2))),
    "low_res": ("down to 12x12 and back up (bilinear)", _low_resolution),
    "off_centre": ("shifted 3-5 pixels in a random direction", _off_centre),
    "rotate_scale": ("rotated +-15 degrees, scaled 0.8-1.2, sheared +-10 degrees", _rotate_scale),
    "fill_frame": ("cropped to the digit and resized to fill the frame", _fill_frame),
    "contrast": ("grey paper (40-110) and grey ink (140-220), noise 6", _contrast),
    "real_light": ("all of the above at random, light on dark", _real_ish),
    "real_dark": ("all of the above at random, dark on light", _inverted(_real_ish)),
}


def make_stress_sets(images: np.ndarray, seed: int = 2024, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """{name: uint8 (N, 28, 28, 1)} for MNIST test images (N, 28, 28, 1), same order as given."""
    out = {}
    for index, name in enumerate(names or list(STRESSES)):
        rng = np.random.default_rng([seed, index])
        transform = STRESSES[name][1]
        out[name] = np.stack(
            [np.asarray(transform(Image.fromarray(image[:, :, 0]), rng), dtype=np.uint8) for image in images]
        )[..., None]
    return out
