"""The one preprocessing path: training, validation, classify one/many and export all use it.

An image becomes a network input in four steps, each exposed so that the train loop can put
augmentations between the second and the third:

1. `image_to_array`: load a file or bytes, convert channels, resize exactly as the dataset did
   (the datasets module's own functions), giving HxWxC uint8;
2. `to_float`: a uint8 NHWC batch becomes float NCHW in channels_last memory, still 0-255;
3. `subtract_mean`: the mean image (HWC) or mean pixel (C,) of the training set, or nothing;
4. `crop`: centre crop, or one random crop per image when training.

The mean is subtracted *before* cropping, so a crop sees the mean at its own offsets. This is
what Caffe's data transformer did in training (mean_file at the crop offset) and, for the centre
crop, what DIGITS' deploy path approximated; doing it in one order everywhere keeps a prediction
identical wherever it is made. Networks take the result at raw 0-255 scale minus the mean.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kiln.fields import Field

# How the mean is subtracted (implemented by Preprocess below), with the labels forms show.
MEAN_MODES = {"none": "None", "image": "Image", "pixel": "Pixel"}
FIELDS = {
    f.name: f
    for f in (
        Field("use_mean", "Subtract mean", str, "subtract the dataset's mean image or mean pixel", choices=MEAN_MODES),
        Field(
            "crop_size",
            "Crop size",
            int,
            "random crop in training, centre crop otherwise (blank: no crop)",
            low=1,
            optional=True,
        ),
    )
}
Source = str | Path | bytes | io.BytesIO


@dataclass(frozen=True, eq=False)
class Preprocess:
    channels: int
    height: int  # stored image size (the dataset's)
    width: int
    resize_mode: str = "squash"
    use_mean: str = "none"  # none | image | pixel
    mean: np.ndarray | None = None  # HWC float32 for "image", (C,) float32 for "pixel"
    crop_size: int | None = None
    _mean_t: dict = field(default_factory=dict, init=False, repr=False)  # per-device tensor cache

    def __post_init__(self) -> None:
        if self.use_mean not in MEAN_MODES:
            raise ValueError(f"use_mean must be one of {tuple(MEAN_MODES)}, not {self.use_mean!r}")
        if self.use_mean != "none":
            if self.mean is None:
                raise ValueError(f"use_mean={self.use_mean!r} needs the dataset's mean")
            mean = np.asarray(self.mean, dtype=np.float32)
            want = (self.height, self.width, self.channels) if self.use_mean == "image" else (self.channels,)
            if mean.shape != want:
                raise ValueError(f"mean has shape {mean.shape}, expected {want} for use_mean={self.use_mean!r}")
            object.__setattr__(self, "mean", mean)
        else:
            object.__setattr__(self, "mean", None)
        if self.crop_size is not None and (self.crop_size < 1 or self.crop_size > min(self.height, self.width)):
            raise ValueError(
                f"crop_size {self.crop_size} must be between 1 and the image's smaller side "
                f"({min(self.height, self.width)}); lower crop_size or leave it blank"
            )

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def for_dataset(cls, dataset: Any, use_mean: str = "image", crop_size: int | None = None) -> Preprocess:
        """The preprocessing a model trained on `dataset` uses (PackedDataset from kiln.datasets.reader)."""
        height, width, channels = dataset.image_shape
        mean = None
        if use_mean == "image":
            mean = dataset.mean_image()
        elif use_mean == "pixel":
            mean = dataset.mean_pixel()
        return cls(
            channels=int(channels),
            height=int(height),
            width=int(width),
            resize_mode=_resize_mode(dataset),
            use_mean=use_mean,
            mean=mean,
            crop_size=crop_size,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "channels": self.channels,
            "height": self.height,
            "width": self.width,
            "resize_mode": self.resize_mode,
            "use_mean": self.use_mean,
            "mean": None if self.mean is None else self.mean.tolist(),
            "crop_size": self.crop_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        mean = data.get("mean")
        return cls(
            channels=int(data["channels"]),
            height=int(data["height"]),
            width=int(data["width"]),
            resize_mode=data.get("resize_mode", "squash"),
            use_mean=data.get("use_mean", "none"),
            mean=None if mean is None else np.asarray(mean, dtype=np.float32),
            crop_size=data.get("crop_size"),
        )

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of what the network sees."""
        if self.crop_size:
            return self.crop_size, self.crop_size
        return self.height, self.width

    # -- step 1: one image ----------------------------------------------------------------------
    def image_to_array(self, source: Source) -> np.ndarray:
        """Load and resize one image exactly as the dataset job did: HxWxC uint8.

        Raises kiln.datasets.images.ImageLoadError for anything that is not a readable image.
        """
        from kiln.datasets.images import load_image, resize_image

        arr = load_image(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source, self.channels)
        if arr.shape[:2] != (self.height, self.width):  # most evaluated images are already the size
            # fill / half_crop pad with noise: a fixed stream makes a prediction repeatable
            arr = resize_image(arr, self.height, self.width, self.resize_mode, rng=np.random.default_rng(0))
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return arr

    # -- steps 2-4: a batch ---------------------------------------------------------------------
    def to_float(self, batch: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
        """uint8 NHWC -> float32 NCHW, channels_last, 0-255. One copy, no per-image work."""
        x = torch.from_numpy(np.ascontiguousarray(batch)) if isinstance(batch, np.ndarray) else batch
        if x.ndim == 3:  # a single HWC image
            x = x.unsqueeze(0)
        if device is not None:
            x = x.to(device, non_blocking=True)  # move the uint8 bytes, not 4x as many floats
        # NHWC permuted to NCHW *is* channels_last memory, and .float() keeps those strides.
        return x.permute(0, 3, 1, 2).float()

    def subtract_mean(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_mean == "none":
            return x
        return x - self._mean_tensor(x.device)

    def crop(self, x: torch.Tensor, train: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Centre crop, or one random crop per image when training (DIGITS/Caffe crop_size)."""
        size = self.crop_size
        n, _, h, w = x.shape
        if not size or (size == h and size == w):
            return x
        if not train:
            y0, x0 = (h - size) // 2, (w - size) // 2
            return x[:, :, y0 : y0 + size, x0 : x0 + size].contiguous(memory_format=torch.channels_last)
        gen_device = generator.device if generator is not None else "cpu"
        top = torch.randint(0, h - size + 1, (n,), generator=generator, device=gen_device).to(x.device)
        left = torch.randint(0, w - size + 1, (n,), generator=generator, device=gen_device).to(x.device)
        steps = torch.arange(size, device=x.device)
        rows = (top[:, None] + steps)[:, None, :, None]  # (N,1,S,1)
        cols = (left[:, None] + steps)[:, None, None, :]  # (N,1,1,S)
        batch_idx = torch.arange(n, device=x.device)[:, None, None, None]
        chan_idx = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        return x[batch_idx, chan_idx, rows, cols].contiguous(memory_format=torch.channels_last)

    def normalize(self, x: torch.Tensor, train: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Steps 3-4 on a float 0-255 batch (after any augmentation)."""
        return self.crop(self.subtract_mean(x), train=train, generator=generator)

    def batch_to_tensor(
        self,
        batch: np.ndarray | torch.Tensor,
        train: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """uint8 NHWC -> the network's input: float NCHW channels_last, mean subtracted, cropped."""
        return self.normalize(self.to_float(batch, device), train=train, generator=generator)

    def _mean_tensor(self, device: torch.device) -> torch.Tensor:
        key = str(device)
        if key not in self._mean_t:
            m = torch.from_numpy(self.mean)
            m = m.permute(2, 0, 1) if m.ndim == 3 else m[:, None, None]  # CHW or C11, broadcasts over N
            self._mean_t[key] = m.to(device)
        return self._mean_t[key]


def _resize_mode(dataset: Any) -> str:
    """The dataset's resize mode, from its manifest (kept by the reader or on disk)."""
    manifest = getattr(dataset, "manifest", None)
    if manifest is None:
        root = getattr(dataset, "job_dir", None) or getattr(dataset, "root", None)
        if root is not None:
            from kiln.datasets.packed_format import read_manifest

            manifest = read_manifest(Path(root))
    if isinstance(manifest, dict):
        image = manifest.get("image", {})
        if isinstance(image, dict) and image.get("resize_mode"):
            return str(image["resize_mode"])
        if manifest.get("resize_mode"):
            return str(manifest["resize_mode"])
    return "squash"


def effective_crop(crop_size: int | None, network_crop: int | None, image_shape: tuple[int, ...]) -> int | None:
    """The form's crop_size, else the network text's (AlexNet 227); ValueError when it is too big.

    ``image_shape`` is the dataset's (H, W, C). One rule for the model form and the train loop.
    """
    crop = crop_size or network_crop
    height, width = int(image_shape[0]), int(image_shape[1])
    if crop and crop > min(height, width):
        source = "crop_size" if crop_size else "the network's crop_size (in its train data layer)"
        raise ValueError(
            f"{source} {crop} is larger than the dataset's {width}x{height} images; "
            "pick a smaller crop, or a dataset with bigger images"
        )
    return crop
