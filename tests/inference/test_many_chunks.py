"""Classify many streams its list in bounded chunks: the images held at once depend neither on the
list's length nor on the model's training batch size; a list over the cap is refused before any
image is read."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from kiln.inference import many
from kiln.inference.many import CHUNK, ListTooLong, chunk_size, classify_list
from kiln.inference.predictor import Top5


class Recorder:
    """A predictor stand-in that records how many images each call is given."""

    def __init__(self, batch_size: int, side: int = 28, channels: int = 1) -> None:
        self.labels = ["a", "b"]
        self.batch_size = batch_size
        self.preprocess = SimpleNamespace(height=side, width=side, channels=channels)
        self.calls: list[tuple[int, int | None]] = []

    def classify(self, sources: list[Any], batch_size: int | None = None, **_: Any) -> list[Top5]:
        self.calls.append((len(sources), batch_size))
        return [Top5([("a", 60.0), ("b", 40.0)], source=str(s)) for s in sources]


def _list(count: int) -> str:
    return "".join(f"/images/{i}.png {i % 2}\n" for i in range(count))


@pytest.mark.parametrize("batch_size", [1, 64, 100_000])
def test_chunks_are_bounded_whatever_the_batch_size(batch_size: int) -> None:
    p = Recorder(batch_size)
    report = classify_list(p, _list(3 * CHUNK + 6))
    assert [n for n, _ in p.calls] == [CHUNK, CHUNK, CHUNK, 6]
    assert all(size == CHUNK for _, size in p.calls)  # the model's forward passes are bounded too
    assert [r["path"] for r in report.rows] == [f"/images/{i}.png" for i in range(3 * CHUNK + 6)]
    assert report.accuracy(1) == 50.0


def test_large_inputs_come_in_smaller_chunks() -> None:
    big = Recorder(64, side=1024, channels=3)
    assert chunk_size(big) == many.CHUNK_VALUES // (1024 * 1024 * 3)
    classify_list(big, _list(40))
    assert max(n for n, _ in big.calls) == chunk_size(big) < CHUNK


def test_a_list_over_the_cap_is_refused_before_any_image_is_read() -> None:
    p = Recorder(64)
    with pytest.raises(ListTooLong, match="KILN_MAX_CLASSIFY_IMAGES"):
        classify_list(p, _list(101), max_images=100)
    assert p.calls == []
    assert len(classify_list(p, _list(101), limit=100, max_images=100).rows) == 100  # num_test_images
    assert len(classify_list(p, _list(100), max_images=100).rows) == 100
