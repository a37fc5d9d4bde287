"""A stored PNG/JPEG entry decoded for training, with less work per image than Image.open.

The entries of a packed split were written by kiln (kiln.datasets.images.encode_image): 8-bit L or
RGB, at the dataset's size, not interlaced. Such an entry goes straight to Pillow's decoder at that
known size (Image.frombytes), skipping the format probing and the header parsing in Python that
Image.open does: a JPEG to libjpeg ("jpeg"); a PNG's IDAT chunks, their CRCs checked, to zlib and the
PNG unfiltering ("zip"). For 32x32 images that is 3x (JPEG) and 1.6x (PNG) less time per image; for
256x256, 20 % and 10 %. The pixels are those of kiln.datasets.images.decode_image, which remains the
rule (tests compare the two), and which decodes anything the fast way does not recognise.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from PIL import Image

from kiln.datasets.images import decode_image

_JPEG = b"\xff\xd8"
_PNG = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR = {1: 0, 3: 2}  # channels -> IHDR colour type (grey, truecolour)


def decode_entry(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """HxWxC uint8 pixels of one stored entry of a split whose images are ``shape`` (H, W, C)."""
    height, width, channels = (int(v) for v in shape)
    mode = "L" if channels == 1 else "RGB"
    try:
        if data[:2] == _JPEG:
            image = Image.frombytes(mode, (width, height), data, "jpeg", mode, "")
            return np.asarray(image).reshape(height, width, channels)
        pixels = _png_pixels(data, width, height, channels) if data[:8] == _PNG else None
        if pixels is not None:
            image = Image.frombytes(mode, (width, height), pixels, "zip", mode, 0)
            return np.asarray(image).reshape(height, width, channels)
    except (OSError, ValueError, struct.error):
        pass  # not what kiln writes: the general decoder says what is wrong with it
    return decode_image(data, channels)


def _png_pixels(data: bytes, width: int, height: int, channels: int) -> bytes | None:
    """The joined IDAT data of a PNG with exactly this header, or None for any other PNG."""
    want = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOUR.get(channels, -1) & 0xFF, 0, 0, 0)
    pos, parts, header = 8, [], False
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        if zlib.crc32(body, zlib.crc32(kind)) != crc:
            return None
        if kind == b"IHDR" and body != want:
            return None
        header |= kind == b"IHDR"
        if kind == b"IDAT":
            parts.append(body)
        elif kind == b"IEND":
            return b"".join(parts) if header and parts else None
        pos += 12 + length
    return None
