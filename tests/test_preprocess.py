"""The one preprocessing path: uint8 NHWC -> float NCHW channels_last, mean, crop."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from kiln.preprocess import Preprocess


def batch(n=2, h=6, w=8, c=3, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def test_to_float_is_nchw_channels_last_at_pixel_scale():
    x = Preprocess(3, 6, 8).batch_to_tensor(batch())
    assert x.shape == (2, 3, 6, 8) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, torch.from_numpy(batch()).permute(0, 3, 1, 2).float())


def test_mean_image_and_pixel():
    b = batch()
    mean = np.random.default_rng(1).uniform(0, 255, (6, 8, 3)).astype(np.float32)
    x = Preprocess(3, 6, 8, use_mean="image", mean=mean).batch_to_tensor(b)
    np.testing.assert_allclose(x.permute(0, 2, 3, 1).numpy(), b - mean[None], rtol=0, atol=1e-4)
    pixel = np.array([10, 20, 30], np.float32)
    x = Preprocess(3, 6, 8, use_mean="pixel", mean=pixel).batch_to_tensor(b)
    np.testing.assert_allclose(x.permute(0, 2, 3, 1).numpy(), b - pixel, atol=1e-4)


def test_centre_crop_takes_the_mean_at_the_same_place():
    b = batch(h=8, w=8)
    mean = np.arange(8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3)
    x = Preprocess(3, 8, 8, use_mean="image", mean=mean, crop_size=4).batch_to_tensor(b)
    assert x.shape == (2, 3, 4, 4) and x.is_contiguous(memory_format=torch.channels_last)
    want = (b.astype(np.float32) - mean)[:, 2:6, 2:6]
    np.testing.assert_allclose(x.permute(0, 2, 3, 1).numpy(), want, atol=1e-4)


def test_random_crop_is_a_window_of_each_image():
    b = batch(n=16, h=8, w=8)
    pre = Preprocess(3, 8, 8, crop_size=5)
    g = torch.Generator().manual_seed(0)
    x = pre.batch_to_tensor(b, train=True, generator=g).permute(0, 2, 3, 1).numpy()
    offsets = set()
    for img, crop in zip(b, x):
        found = [(t, x) for t in range(4) for x in range(4) if np.array_equal(img[t : t + 5, x : x + 5], crop)]
        assert found
        offsets.add(found[0])
    assert len(offsets) > 3  # one offset per image, not per batch
    again = pre.batch_to_tensor(b, train=True, generator=torch.Generator().manual_seed(0))
    assert np.array_equal(again.permute(0, 2, 3, 1).numpy(), x)


def test_dict_round_trip_is_json():
    import json

    pre = Preprocess(1, 4, 4, "crop", "image", np.full((4, 4, 1), 3.25, np.float32), crop_size=3)
    back = Preprocess.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert back.to_dict() == pre.to_dict() and back.mean.dtype == np.float32
    assert back.input_size == (3, 3)


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(crop_size=9), "crop_size"),
        (dict(use_mean="image"), "mean"),
        (dict(use_mean="median"), "use_mean"),
        (dict(use_mean="pixel", mean=np.zeros(3)), "shape"),
    ],
)
def test_bad_settings_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        Preprocess(1, 8, 8, **kw)


def test_image_to_array_resizes_like_the_dataset():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    data = io.BytesIO()
    img.save(data, "PNG")
    arr = Preprocess(1, 10, 10, "squash").image_to_array(data.getvalue())
    assert arr.shape == (10, 10, 1) and arr.dtype == np.uint8
    from kiln.datasets.images import load_image, resize_image

    assert np.array_equal(arr, resize_image(load_image(data.getvalue(), 1), 10, 10, "squash"))
