"""Image loading, channel conversion and the four DIGITS resize modes.

This is the one preprocessing path: dataset packing, classify one / many and export all
load with `load_image` and resize with `resize_image`, so a picture gives the same pixels
wherever it is seen.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from kiln import paths
from kiln.datasets.spec import IMAGE_EXTENSIONS, RESIZE_MODES  # noqa: F401  (re-exported)
from kiln.paths import PathRefused

# Decoded pixels per image (50 Mpx: a 8660x5773 photo). Refused per image before decoding; Pillow's
# own limit is set to the same, so it warns above it and refuses bombs over twice it anywhere.
DEFAULT_MAX_PIXELS = 50_000_000
Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS
DEFAULT_MAX_BYTES = paths.DEFAULT_MAX_FILE_BYTES  # bytes read per file (KILN_MAX_IMAGE_MB)

READ_WHOLE_BELOW = 64 << 20  # bytes; larger files are decoded as a stream
_CONVERT_ROWS_PX = 1 << 18  # high-depth images are converted to 8 bits about this many pixels at a time
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_ALPHA_RGB = ("P", "PA", "RGBA", "RGBa")
_EXIF_FORMATS = ("JPEG", "MPO", "TIFF", "WEBP")
_ORIENTATION = 0x0112


class ImageLoadError(Exception):
    """An image could not be read; the message names the file and why."""


def _describe(source: object) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "uploaded image"
    return str(getattr(source, "name", "uploaded image"))


def _open_path(path: str | Path, max_bytes: int) -> tuple[bytes | BinaryIO, bool]:
    """(content, empty) of an image file, through kiln.paths: regular files only, at most max_bytes.

    One read() and decoding from memory costs ~7 % less per small image than Pillow's dozen small
    reads on the file (measured on MNIST PNGs); files over READ_WHOLE_BELOW are streamed instead.
    """
    f = paths.open_bounded(path, max_bytes)
    if os.fstat(f.fileno()).st_size > READ_WHOLE_BELOW:
        return f, False
    with f:
        data = paths.read_opened(f)
    return data, not data


def _read(source: str | Path | bytes | BinaryIO, max_pixels: int, max_bytes: int) -> Image.Image:
    """Open and fully decode (load() inside the try, so truncated files are caught here)."""
    stream: BinaryIO | None = None
    empty = False
    try:
        if isinstance(source, (str, Path)):
            content, empty = _open_path(source, max_bytes)
            if not isinstance(content, bytes):
                stream = content
        else:
            content = source
        if isinstance(content, (bytes, bytearray, memoryview)):
            empty = empty or len(content) == 0
            if empty:
                raise ValueError("empty")
            content = io.BytesIO(content)
        img = Image.open(content)
        if img.width * img.height > max_pixels:
            raise ImageLoadError(
                f"{_describe(source)}: {img.width}x{img.height} pixels is over the limit "
                f"of {max_pixels} (refused as a possible decompression bomb)"
            )
        img.load()
    except ImageLoadError:
        raise
    except PathRefused as exc:
        raise ImageLoadError(f"{_describe(source)}: {exc}") from None
    except FileNotFoundError:
        raise ImageLoadError(f"{_describe(source)}: file not found") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"{_describe(source)}: refused as a possible decompression bomb ({exc})") from None
    except Exception as exc:  # decoders raise many types on corrupt data; all mean "unreadable"
        if empty:
            raise ImageLoadError(f"{_describe(source)}: empty file (0 bytes)") from None
        raise ImageLoadError(f"{_describe(source)}: not a readable image ({type(exc).__name__}: {exc})") from None
    finally:
        if stream is not None:
            stream.close()
    return img


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation of camera photos (DIGITS did not; phones rely on it)."""
    if img.format in _EXIF_FORMATS:
        orientation = img.getexif().get(_ORIENTATION, 1)
        if orientation in range(2, 9):
            return ImageOps.exif_transpose(img)
    return img


def _from_high_depth(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit int and float images to 8-bit L, scaled rather than clipped.

    I;16*: x / 257 rounded (65535 -> 255). I: kept if within 0..255, /257 if within 0..65535, else
    scaled by its maximum. F: x * 255 if within 0..1, kept if within 0..255, else min-max scaled.

    Memory stays near the image's own size: 16-bit values are converted with integer arithmetic
    ((x + 128) // 257 equals round(x / 257) for every 16-bit x), and 32-bit ones a block of rows
    at a time, so no whole-image float64 copy is ever made (a 172 KB 16-bit PNG once took 2.1 GB).
    """
    width, height = img.size
    out = np.empty((height, width), np.uint8)
    rows = max(1, _CONVERT_ROWS_PX // max(1, width))

    def blocks() -> Iterator[tuple[slice, np.ndarray]]:  # a few rows at a time, never the whole image copied
        for top in range(0, height, rows):
            bottom = min(height, top + rows)
            yield slice(top, bottom), np.asarray(img.crop((0, top, width, bottom)))

    if img.mode in _SIXTEEN_BIT:
        for where, part in blocks():
            x = part.astype(np.uint32)
            x += 128
            x //= 257
            out[where] = x
        return Image.fromarray(out, "L")
    lo, hi = 0.0, 0.0
    for i, (_, part) in enumerate(blocks()):  # the range first, as the whole image's float64 copy had it
        x = np.nan_to_num(part.astype(np.float64))
        lo, hi = (float(x.min()), float(x.max())) if i == 0 else (min(lo, float(x.min())), max(hi, float(x.max())))
    for where, part in blocks():
        y: np.ndarray = np.nan_to_num(part.astype(np.float64))
        if img.mode == "F" and lo >= 0 and hi <= 1:
            y = y * 255.0
        elif img.mode == "F" and (lo < 0 or hi > 255):
            y = (y - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(y)
        elif hi > 65535:
            y = np.clip(y, 0, None) * (255.0 / hi)
        elif hi > 255:
            y = np.clip(y, 0, None) / 257.0
        out[where] = np.clip(np.rint(y), 0, 255)
    return Image.fromarray(out, "L")


def _to_l_or_rgb(img: Image.Image, name: str) -> Image.Image:
    """DIGITS' conversions: transparency goes on white, everything ends up L or RGB."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in ("LA", "La"):
        white = Image.new("L", img.size, 255)
        white.paste(img.convert("L"), mask=img.getchannel("A"))
        return white
    if mode in _ALPHA_RGB:
        if mode == "P" and "transparency" not in img.info:
            return img.convert("RGB")
        rgba = img.convert("RGBA")
        white = Image.new("RGB", img.size, (255, 255, 255))
        white.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return white
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        return _from_high_depth(img)
    try:
        return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX
    except Exception as exc:
        raise ImageLoadError(f"{name}: image mode {mode!r} is not supported ({exc})") from None


def load_image(
    source: str | Path | bytes | BinaryIO,
    channels: int,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """Read an image file, bytes or stream into an HxWxC uint8 array, C = channels (1 grey, 3 RGB).

    Grey is Pillow's convert('L'): 0.299R + 0.587G + 0.114B (ITU-R 601-2, rounded); grey to RGB
    repeats the channel. Raises ImageLoadError for anything unreadable, truncated, empty,
    over max_pixels, in an unsupported mode, or, for a path, not a regular file (a FIFO, a device)
    or over max_bytes (kiln.paths.open_bounded).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels!r}")
    img = _to_l_or_rgb(_upright(_read(source, max_pixels, max_bytes)), _describe(source))
    want = "L" if channels == 1 else "RGB"
    if img.mode != want:
        img = img.convert(want)
    arr = np.asarray(img)
    return arr.reshape(arr.shape[0], arr.shape[1], channels)


def round_half_up(x: float) -> int:
    """Python 2's round(), which DIGITS' size arithmetic used (Python 3 rounds half to even)."""
    return int(math.floor(x + 0.5))


def _pillow_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[0] == height and image.shape[1] == width:
        return image
    channels = image.shape[2]
    pil = Image.fromarray(image[:, :, 0] if channels == 1 else image, "L" if channels == 1 else "RGB")
    out = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))
    return out.reshape(height, width, channels)


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _pad(image: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Pad the short dimension with noise, half before and half after (the size difference is even)."""
    h, w, c = image.shape
    if h < height:
        top = (height - h) // 2
        return np.concatenate([_noise(rng, (top, w, c)), image, _noise(rng, (height - h - top, w, c))], axis=0)
    if w < width:
        left = (width - w) // 2
        return np.concatenate([_noise(rng, (h, left, c)), image, _noise(rng, (h, width - w - left, c))], axis=1)
    return image


def _crop_centre(image: np.ndarray, height: int, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    if w > width:
        start = round_half_up((w - width) / 2.0)
        image = image[:, start : start + width]
    if h > height:
        start = round_half_up((h - height) / 2.0)
        image = image[start : start + height, :]
    return image


def _even_gap(size: int, target: int) -> int:
    """Grow size by one if needed so target - size is even (DIGITS' rule), keeping it >= 1."""
    size = max(size, 1)
    return size + 1 if (target - size) % 2 == 1 else size


def resize_image(
    image: np.ndarray, height: int, width: int, mode: str, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Resize an HxWxC uint8 image to height x width with DIGITS' resize modes.

    squash: plain resize; also used whenever the aspect ratio already matches.
    crop: scale so the image covers the target, then cut the long side at the centre.
    fill: scale so the image fits inside, then pad the short side with uniform noise 0-255,
        half on each side (the scaled size is nudged by one so the padding splits evenly).
    half_crop: scale by the mean of the two ratios, crop the long side, noise-pad the short one.

    Pixel-exactness: every scaling step is Pillow's Image.resize with BILINEAR (an antialiasing
    filter when shrinking), so squash equals Pillow bilinear exactly. DIGITS used scipy's imresize,
    itself PIL bilinear, so values may differ by its older PIL. Sizes and crop offsets use
    Python 2 rounding (half away from zero) as DIGITS did. An image already at the size is
    returned unchanged. Noise comes from rng (a fresh unseeded generator when None).
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {', '.join(RESIZE_MODES)}, not {mode!r}")
    if image.ndim == 2:
        image = image[:, :, None]
    h, w = image.shape[:2]
    if h == height and w == width:
        return image
    width_ratio, height_ratio = w / width, h / height
    if mode == "squash" or width_ratio == height_ratio:
        return _pillow_resize(image, height, width)
    wide = width_ratio > height_ratio
    if mode == "crop":
        if wide:
            size = (height, max(width, round_half_up(w / height_ratio)))
        else:
            size = (max(height, round_half_up(h / width_ratio)), width)
        return _crop_centre(_pillow_resize(image, *size), height, width)
    if mode == "fill":
        if wide:
            size = (_even_gap(round_half_up(h / width_ratio), height), width)
        else:
            size = (height, _even_gap(round_half_up(w / height_ratio), width))
    else:  # half_crop
        ratio = (width_ratio + height_ratio) / 2.0
        rw, rh = max(round_half_up(w / ratio), 1), max(round_half_up(h / ratio), 1)
        size = (_even_gap(rh, height), rw) if wide else (rh, _even_gap(rw, width))
    resized = _crop_centre(_pillow_resize(image, *size), height, width)
    return _pad(resized, height, width, rng if rng is not None else np.random.default_rng())


def encode_image(image: np.ndarray, fmt: str) -> bytes:
    """PNG (lossless) or JPEG (quality 90, as DIGITS) bytes of an HxWxC uint8 image."""
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image, "L" if image.shape[2] == 1 else "RGB")
    buf = io.BytesIO()
    if fmt == "png":
        pil.save(buf, format="PNG")
    elif fmt == "jpg":
        pil.save(buf, format="JPEG", quality=90)
    else:
        raise ValueError(f"encoding must be png or jpg, not {fmt!r}")
    return buf.getvalue()


def decode_image(data: bytes, channels: int) -> np.ndarray:
    """Inverse of encode_image (stored images are always L or RGB already)."""
    arr = np.asarray(Image.open(io.BytesIO(data)).convert("L" if channels == 1 else "RGB"))
    return arr.reshape(arr.shape[0], arr.shape[1], channels)
