"""Images as the client sends them: a local file, bytes, a PIL image or a NumPy array -> PNG or file
bytes; labelled images -> a zip of class folders (what evaluate's ``image_archive`` takes)."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# A local file (path), its bytes, a PIL.Image.Image, or a NumPy uint8 array (H x W or H x W x C).
ImageLike = str | os.PathLike[str] | bytes | Any
# (image, label) or (image, label, name): name is the file's name in its class folder ("blur/7.png").
LabelledImage = tuple[ImageLike, str] | tuple[ImageLike, str, str]


def image_bytes(image: ImageLike, name: str = "image.png") -> tuple[str, bytes]:
    """(file name, bytes) of an image to upload. Files and bytes are sent as they are (the server
    decodes them as it decodes everything); PIL images and arrays are encoded as PNG."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        return path.name, path.read_bytes()
    if isinstance(image, (bytes, bytearray, memoryview)):
        return name, bytes(image)
    return _png_name(name), png_bytes(image)


def png_bytes(image: Any) -> bytes:
    """A PIL image or a NumPy array as PNG bytes."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        import numpy as np

        array = np.asarray(image)
        if array.dtype != np.uint8:
            raise TypeError(f"an image array must be uint8, got {array.dtype}")
        image = Image.fromarray(array)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _png_name(name: str) -> str:
    stem, _, _ = name.rpartition(".")
    return f"{stem or name}.png"


def labelled_zip(images: Iterable[LabelledImage] | Mapping[str, Sequence[ImageLike]]) -> bytes:
    """A zip of class folders, ``<label>/<name>``, from (image, label[, name]) items or
    ``{label: [image, ...]}``. Names default to a running number; a name without an image
    extension gets the file's own (``.png`` for PIL images and arrays)."""
    items: Iterable[tuple[Any, ...]]
    if isinstance(images, Mapping):
        items = ((img, label) for label, imgs in images.items() for img in imgs)
    else:
        items = images
    out = io.BytesIO()
    count = 0
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
        for item in items:
            image, label, *rest = item
            name = str(rest[0]) if rest else f"{count:06d}"
            default = "image.bin"
            if isinstance(image, (str, os.PathLike)):
                default = Path(image).name
            file_name, data = image_bytes(image, default)
            suffix = Path(file_name).suffix or ".png"
            if not Path(name).suffix:
                name += suffix
            archive.writestr(f"{_safe(str(label))}/{_safe_path(name)}", data)
            count += 1
    if count == 0:
        raise ValueError("images: no images given")
    return out.getvalue()


def _safe(part: str) -> str:
    part = part.replace("/", "_").replace("\\", "_").strip()
    if part in ("", ".", ".."):
        raise ValueError(f"not a usable label or name: {part!r}")
    return part


def _safe_path(name: str) -> str:
    return "/".join(_safe(p) for p in name.replace("\\", "/").split("/") if p)
