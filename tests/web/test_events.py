"""The live event stream (/events, server-sent events) over real HTTP while a real worker runs."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kiln.store import Store
from tests.conftest import ThreadServer, write_class_folder


class Stream:
    """An open /events response read on a thread; `next()` gives (event, data) as they come."""

    def __init__(self, client: httpx.Client, params: dict[str, str] | None = None) -> None:
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._cm = client.stream("GET", "/events", params=params, timeout=httpx.Timeout(30, read=None))
        self.response = self._cm.__enter__()
        assert self.response.headers["content-type"].startswith("text/event-stream")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        name, data = "message", ""
        try:
            for line in self.response.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif not line and data:
                    self._events.put((name, json.loads(data)))
                    name, data = "message", ""
        except httpx.HTTPError:
            pass

    def next(self, timeout: float = 60) -> tuple[str, Any]:
        return self._events.get(timeout=timeout)

    def until(self, match: Any, timeout: float = 120) -> list[tuple[str, Any]]:
        """Every event up to and including the first that `match`es."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                seen.append(self.next(max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"no matching event in {timeout} s; saw {seen}") from None
            if match(*seen[-1]):
                return seen

    def pending(self) -> list[tuple[str, Any]]:
        out = []
        while not self._events.empty():
            out.append(self._events.get())
        return out

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThreadServer]:
    srv = ThreadServer(tmp_path / "data")
    yield srv
    srv.stop()


def test_a_running_job_is_streamed_live_and_its_deletion_too(server: ThreadServer, tmp_path: Path) -> None:
    folder = write_class_folder(tmp_path / "imgs", {"a": 30, "b": 30}, size=(16, 16))
    everything = Stream(server.client)
    try:
        assert everything.next()[0] == "hello"
        res = server.client.post(
            "/datasets/images/classification.json",
            data={"dataset_name": "live", "folder_train": str(folder), "resize_width": "16", "resize_height": "16"},
        )
        job_id = res.json()["id"]
        mine = Stream(server.client, {"job_id": job_id})
        try:
            assert mine.next()[0] == "hello"
            seen = everything.until(lambda e, d: d.get("job_id") == job_id and d["state"]["status"] == "Done")
            about = [d for e, d in seen if e == "job" and d["job_id"] == job_id]
            statuses = [d["state"]["status"] for d in about]
            assert "Running" in statuses and statuses[-1] == "Done", statuses
            assert about[-1]["row"]["name"] == "live" and about[-1]["row"]["progress"] == 100
            assert "status" in about[-1]["update"]
            # another job changes: the whole stream says so, the stream of this job does not
            store = Store(server.settings.db_path)
            other = store.create_job("dataset", "other", {"spec": {}}, "alice")
            store.set_status(other, "Aborted", note="made by the test")
            store.close()
            everything.until(lambda e, d: d.get("job_id") == other)
            assert server.client.delete(f"/datasets/{job_id}").text == "Job deleted."
            gone = everything.until(lambda e, d: d.get("job_id") == job_id and d.get("update") == "deleted")
            assert gone[-1] == ("job", {"job_id": job_id, "update": "deleted"})
            own = mine.until(lambda e, d: d.get("update") == "deleted")
            assert {d["job_id"] for _, d in own + mine.pending()} == {job_id}
        finally:
            mine.close()
    finally:
        everything.close()
