"""Random crop and mirror on uint8 images, before the float conversion, and the network input made from them.

Caffe's transformer (DIGITS' crop_size and mirror) crops and flips every training image. Kiln's
float path (kiln.preprocess + kiln.training.augment) does it on whole float batches: flip, subtract
the mean, crop at a random offset. When those are the only random changes, the feeder does them on
the uint8 pixels instead (a quarter of the bytes to convert and move; in worker processes for large
splits), and the loop subtracts the mean at each image's offset: the same pixels, bit for bit.

Every batch draws its offsets and flips from its own seed, derived from the run's seed, the rank,
the epoch and the batch's position in the epoch, so a batch is the same whichever process or thread
assembles it, and a resumed run draws what the straight run drew.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
import torch

from kiln.preprocess import Preprocess
from kiln.training.augment import Augmenter
from kiln.training.config import TrainConfig
from kiln.training.entry_decode import decode_entry


class Draws(NamedTuple):
    """One batch's choices, per image: crop offsets in the (flipped) image, and the flip."""

    top: np.ndarray  # int64 (N,)
    left: np.ndarray  # int64 (N,)
    flip: np.ndarray  # bool (N,)


@dataclass(frozen=True)
class CropPlan:
    """What to do to the uint8 batches of one stream: crop to size x size (None: keep the size) at
    random offsets, mirror half the images left-right (``mirror``), each batch seeded by
    ``key + (first + its position in the stream,)``."""

    size: int | None
    mirror: bool
    key: tuple[int, ...]
    first: int = 0

    def out_shape(self, item: tuple[int, ...]) -> tuple[int, ...]:
        """(H, W, C) of an image after the crop, for a stored (H, W, C)."""
        return (self.size, self.size, item[2]) if self.size else tuple(item)

    def draws(self, position: int, n: int, height: int, width: int) -> Draws:
        """The choices for batch ``position`` of the stream (n images of height x width)."""
        rng = np.random.default_rng([*self.key, self.first + position])
        size_h, size_w = (self.size, self.size) if self.size else (height, width)
        top = rng.integers(0, height - size_h + 1, n)
        left = rng.integers(0, width - size_w + 1, n)
        flip = rng.random(n) < 0.5 if self.mirror else np.zeros(n, dtype=bool)
        return Draws(top, left, flip)


def crop_one(image: np.ndarray, top: int, left: int, size: int | None, flip: bool) -> np.ndarray:
    """A view of one HWC image, mirrored (if ``flip``) and then cropped at (top, left).

    Cropping the mirrored image at ``left`` takes columns W-left-size .. W-left-1 of the original,
    right to left: no copy of the whole image is made.
    """
    height, width = image.shape[:2]
    sh, sw = (size, size) if size else (height, width)
    rows = image[top : top + sh]
    if flip:
        return rows[:, width - left - sw : width - left][:, ::-1]
    return rows[:, left : left + sw]


def crop_into(out: np.ndarray, images: Any, index: np.ndarray, size: int | None, draws: Draws | None) -> None:
    """out[j] = image index[j] of ``images`` (an array, a memmap, or EncodedImages: decoded here),
    cropped and mirrored."""
    encoded = None if isinstance(images, np.ndarray) else getattr(images, "encoded", None)
    for j, i in enumerate(index):
        image = images[i] if encoded is None else decode_entry(encoded(int(i)), images.shape)
        if draws is None:
            out[j] = image
        else:
            out[j] = crop_one(image, int(draws.top[j]), int(draws.left[j]), size, bool(draws.flip[j]))


class TrainInput:
    """A training batch from the feeder -> the network's float input (channels_last, mean subtracted).

    ``crops_for`` says what the feeder should do on uint8 (None: nothing, the float path does it all);
    calling the object turns the feeder's batch into the input, by the float path for the batches
    the feeder left whole.
    """

    def __init__(self, config: TrainConfig, pre: Preprocess, augment: Augmenter, seed: int, rank: int = 0) -> None:
        self.pre, self.augment, self.key = pre, augment, (int(seed), int(rank))
        size = pre.crop_size if pre.crop_size and (pre.crop_size, pre.crop_size) != (pre.height, pre.width) else None
        self.size, self.mirror = size, augment.flip_lr
        # anything but the left-right flip must see the whole image before the crop: float path
        self.on_uint8 = (size is not None or self.mirror) and not _beyond_mirror(config, pre.channels)
        self._mean: dict[str, torch.Tensor] = {}

    def crops_for(self, epoch: int, first: int = 0) -> CropPlan | None:
        """The plan for a stream of epoch ``epoch`` that starts at micro-batch ``first`` of the epoch."""
        if not self.on_uint8:
            return None
        return CropPlan(self.size, self.mirror, (*self.key, int(epoch)), int(first))

    def __call__(
        self, batch: Any, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """``batch``: (images, targets) from Feeder.stream; its ``draws`` say how it was cropped."""
        images, draws = batch[0], getattr(batch, "draws", None)
        pre = self.pre
        x = pre.to_float(images, device)
        if draws is None:  # the float path: augment the whole image, subtract the mean, crop
            return pre.normalize(self.augment(x, generator), train=True, generator=generator)
        if pre.use_mean != "image" or self.size is None:  # a mean pixel, or no offsets to follow
            return pre.subtract_mean(x).contiguous(memory_format=torch.channels_last)
        return (x - self._mean_at(draws, x.device)).contiguous(memory_format=torch.channels_last)

    def _mean_at(self, draws: Draws, device: torch.device) -> torch.Tensor:
        """(N, C, S, S): the mean image at each image's crop offset (the mean itself is not mirrored,
        as in the float path, which flips the image and then subtracts the mean)."""
        key = str(device)
        if key not in self._mean:
            assert self.pre.mean is not None
            self._mean[key] = torch.from_numpy(self.pre.mean).permute(2, 0, 1).to(device)  # CHW
        mean, size = self._mean[key], int(self.size or 0)
        steps = torch.arange(size, device=device)
        rows = torch.from_numpy(draws.top).to(device)[:, None] + steps  # (N, S)
        cols = torch.from_numpy(draws.left).to(device)[:, None] + steps
        return mean[:, rows[:, :, None], cols[:, None, :]].permute(1, 0, 2, 3)


def _beyond_mirror(config: TrainConfig, channels: int) -> bool:
    """True when the augmentations ask for more than a left-right flip."""
    flip = {"fliplr": "none", "fliplrud": "flipud"}.get(config.aug_flip, config.aug_flip)
    return Augmenter(replace(config, aug_flip=flip), channels).active
