"""Classify images with the model in this folder, exactly as the kiln server that trained it.

    python predict.py IMAGE...          TorchScript (model.pt): needs torch, numpy, Pillow
    python predict.py --onnx IMAGE...   ONNX Runtime (model.onnx): needs onnxruntime, numpy, Pillow
    python predict.py --all IMAGE...    also print every class's probability, in labels.txt order

Prints, per image, one line of the JSON kiln's classify_one.json answers:
{"predictions": [[label, percent], ...]} (top 5, best first), or {"error": "..."} for an image
that cannot be read (the exit status is then 1). Preprocessing follows info.json["preprocess"]:
channel conversion, the dataset's resize mode, the training mean (subtracted before the centre
crop), raw 0-255 pixel scale, NCHW float32.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
Image.MAX_IMAGE_PIXELS = 50_000_000  # kiln's per-image limit
EXIF_FORMATS = ("JPEG", "MPO", "TIFF", "WEBP")
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
ALPHA_RGB = ("P", "PA", "RGBA", "RGBa")


# -- loading: kiln.datasets.images.load_image -----------------------------------------------------
def high_depth_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit int and float images to 8-bit grey, scaled rather than clipped."""
    if img.mode in SIXTEEN_BIT:
        x = np.asarray(img).astype(np.uint32)
        return Image.fromarray(((x + 128) // 257).astype(np.uint8), "L")
    y = np.nan_to_num(np.asarray(img).astype(np.float64))
    lo, hi = float(y.min()), float(y.max())
    if img.mode == "F" and lo >= 0 and hi <= 1:
        y = y * 255.0
    elif img.mode == "F" and (lo < 0 or hi > 255):
        y = (y - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(y)
    elif hi > 65535:
        y = np.clip(y, 0, None) * (255.0 / hi)
    elif hi > 255:
        y = np.clip(y, 0, None) / 257.0
    return Image.fromarray(np.clip(np.rint(y), 0, 255).astype(np.uint8), "L")


def to_l_or_rgb(img: Image.Image) -> Image.Image:
    """Transparency goes on white; everything ends up L or RGB."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in ("LA", "La"):
        white = Image.new("L", img.size, 255)
        white.paste(img.convert("L"), mask=img.getchannel("A"))
        return white
    if mode in ALPHA_RGB:
        if mode == "P" and "transparency" not in img.info:
            return img.convert("RGB")
        rgba = img.convert("RGBA")
        white_rgb = Image.new("RGB", img.size, (255, 255, 255))
        white_rgb.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return white_rgb
    if mode in SIXTEEN_BIT or mode in ("I", "F"):
        return high_depth_to_l(img)
    return img.convert("RGB")


def load_image(path: str, channels: int) -> np.ndarray:
    """HxWxC uint8, C = channels; camera photos turned upright by their EXIF orientation."""
    img: Image.Image = Image.open(path)
    img.load()
    if img.format in EXIF_FORMATS and img.getexif().get(0x0112, 1) in range(2, 9):
        img = ImageOps.exif_transpose(img)
    img = to_l_or_rgb(img)
    want = "L" if channels == 1 else "RGB"
    if img.mode != want:
        img = img.convert(want)
    arr = np.asarray(img)
    return arr.reshape(arr.shape[0], arr.shape[1], channels)


# -- resizing: kiln.datasets.images.resize_image (DIGITS' four modes) -----------------------------
def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def pillow_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[0] == height and image.shape[1] == width:
        return image
    c = image.shape[2]
    pil = Image.fromarray(image[:, :, 0] if c == 1 else image, "L" if c == 1 else "RGB")
    return np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR)).reshape(height, width, c)


def crop_centre(image: np.ndarray, height: int, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    if w > width:
        start = round_half_up((w - width) / 2.0)
        image = image[:, start : start + width]
    if h > height:
        start = round_half_up((h - height) / 2.0)
        image = image[start : start + height, :]
    return image


def pad_noise(image: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    h, w, c = image.shape
    noise = lambda shape: rng.integers(0, 256, size=shape, dtype=np.uint8)  # noqa: E731
    if h < height:
        top = (height - h) // 2
        return np.concatenate([noise((top, w, c)), image, noise((height - h - top, w, c))], axis=0)
    if w < width:
        left = (width - w) // 2
        return np.concatenate([noise((h, left, c)), image, noise((h, width - w - left, c))], axis=1)
    return image


def even_gap(size: int, target: int) -> int:
    size = max(size, 1)
    return size + 1 if (target - size) % 2 == 1 else size


def resize(image: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    h, w = image.shape[:2]
    if h == height and w == width:
        return image
    wr, hr = w / width, h / height
    if mode == "squash" or wr == hr:
        return pillow_resize(image, height, width)
    wide = wr > hr
    if mode == "crop":
        size = (height, max(width, round_half_up(w / hr))) if wide else (max(height, round_half_up(h / wr)), width)
        return crop_centre(pillow_resize(image, *size), height, width)
    if mode == "fill":
        size = (
            (even_gap(round_half_up(h / wr), height), width)
            if wide
            else (height, even_gap(round_half_up(w / hr), width))
        )
    elif mode == "half_crop":
        ratio = (wr + hr) / 2.0
        rw, rh = max(round_half_up(w / ratio), 1), max(round_half_up(h / ratio), 1)
        size = (even_gap(rh, height), rw) if wide else (rh, even_gap(rw, width))
    else:
        raise ValueError(f"unknown resize mode {mode!r}")
    resized = crop_centre(pillow_resize(image, *size), height, width)
    return pad_noise(resized, height, width, np.random.default_rng(0))  # kiln pads with this fixed stream


# -- to the network's input: kiln.preprocess.Preprocess -------------------------------------------
def to_input(path: str, pre: dict[str, Any], mean: np.ndarray | None) -> np.ndarray:
    """One image as float32 CHW: resized, mean subtracted, then centre-cropped."""
    arr = resize(load_image(path, pre["channels"]), pre["height"], pre["width"], pre["resize_mode"])
    x = arr.astype(np.float32)
    if mean is not None:
        x = x - mean  # HWC image or (C,) pixel, broadcast
    size = pre.get("crop_size")
    h, w = x.shape[:2]
    if size and (size != h or size != w):
        y0, x0 = (h - size) // 2, (w - size) // 2
        x = x[y0 : y0 + size, x0 : x0 + size]
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def run_model(batch: np.ndarray, onnx: bool) -> np.ndarray:
    """Class probabilities (N, classes) from model.onnx or model.pt."""
    if onnx:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(HERE / "model.onnx"), providers=["CPUExecutionProvider"])
        logits = session.run(None, {session.get_inputs()[0].name: batch})[0]
        return softmax(np.asarray(logits, dtype=np.float32))
    import torch

    model = torch.jit.load(str(HERE / "model.pt"), map_location="cpu").eval()
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(batch)).float(), dim=1).numpy()


def main(argv: list[str]) -> int:
    onnx, full = "--onnx" in argv, "--all" in argv
    images = [a for a in argv if a not in ("--onnx", "--all")]
    if not images or any(a.startswith("--") for a in images):
        print(__doc__, file=sys.stderr)
        return 2
    info = json.loads((HERE / "info.json").read_text())
    pre, labels = info["preprocess"], info["labels"]
    mean = np.load(HERE / info["mean file"], allow_pickle=False) if pre["use_mean"] != "none" else None
    inputs: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    for i, path in enumerate(images):
        try:
            inputs[i] = to_input(path, pre, mean)
        except (OSError, ValueError, SyntaxError) as exc:  # what Pillow raises for unreadable files
            errors[i] = f"{path}: not a readable image ({type(exc).__name__}: {exc})"
    probs = run_model(np.stack(list(inputs.values())), onnx) if inputs else np.zeros((0, len(labels)))
    rows = dict(zip(inputs, probs))
    k = min(5, len(labels))
    for i in range(len(images)):
        if i in errors:
            print(json.dumps({"error": errors[i]}))
            continue
        order = np.argsort(-rows[i], kind="stable")[:k]
        out: dict[str, Any] = {"predictions": [[labels[j], round(100.0 * float(rows[i][j]), 2)] for j in order]}
        if full:
            out["probabilities"] = [float(p) for p in rows[i]]
        print(json.dumps(out))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
