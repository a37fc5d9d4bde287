"""Old `changes` rows are pruned while the live event stream reads them: it goes on from its
position (seq never goes back) and still delivers what changed after."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kiln import store as store_module
from kiln.store import Store
from tests.conftest import ThreadServer


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadServer]:
    monkeypatch.setattr(store_module, "KEEP_CHANGES", 50)
    monkeypatch.setattr(store_module, "PRUNE_EVERY", 16)
    srv = ThreadServer(tmp_path / "data", scheduler=False)
    yield srv
    srv.stop()


def _read(client: httpx.Client, out: queue.Queue, stop: threading.Event) -> None:
    try:
        with client.stream("GET", "/events", timeout=httpx.Timeout(30, read=None)) as res:
            name = ""
            for line in res.iter_lines():
                if stop.is_set():
                    return
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    out.put((name, json.loads(line[6:])))
    except httpx.HTTPError:  # the server stopped
        pass


def test_the_event_stream_goes_on_across_pruning(server: ThreadServer) -> None:
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    stop = threading.Event()
    reader = threading.Thread(target=_read, args=(server.client, events, stop), daemon=True)
    reader.start()
    assert events.get(timeout=30)[0] == "hello"
    store = Store(server.settings.db_path)
    try:
        job_id = store.create_job("model", "busy", {"config": {}}, "alice")
        for k in range(600):  # many times what is kept
            store.set_progress(job_id, k / 600, f"step {k}")
        assert store.db.execute("SELECT COUNT(*) FROM changes").fetchone()[0] <= 50 + 16
        store.update_fields(job_id, name="renamed after the pruning")
        while True:
            name, data = events.get(timeout=30)
            if name == "job" and data.get("row", {}).get("name") == "renamed after the pruning":
                break
        assert "attribute" in data["update"]
    finally:
        stop.set()
        store.close()
