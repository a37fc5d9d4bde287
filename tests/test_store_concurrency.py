"""The store under concurrency: one connection per thread, one transaction per change, ids that
never collide, and old `changes` / `logs` rows pruned without breaking the readers."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from kiln import store as store_module
from kiln.store import JobIdTaken, Store


def _job(store: Store, name: str = "j") -> str:
    return store.create_job("model", name, {"config": {}}, "alice")


def _in_threads(count: int, work) -> list[BaseException]:
    """Run work(i) on `count` threads released together; the exceptions they raised."""
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        start.wait()
        try:
            work(i)
        except BaseException as exc:  # collected: the test asserts there are none
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_one_store_used_from_many_threads(tmp_path: Path) -> None:
    """Request threads, the scheduler and abort threads share a Store: their transactions never
    interleave on one connection ("cannot start a transaction within a transaction")."""
    store = Store(tmp_path / "kiln.db")
    ids = [_job(store, f"j{i}") for i in range(4)]

    def work(i: int) -> None:
        job_id = ids[i % len(ids)]
        for k in range(40):
            store.set_progress(job_id, k / 40, f"step {k}")
            store.add_metrics(job_id, k, {"loss": 1.0 / (k + 1)}, "train")
            store.add_log(job_id, f"thread {i} line {k}")
            store.update_fields(job_id, notes=f"{i}-{k}")
            assert store.get_job(job_id) is not None
            _job(store, f"t{i}-{k}")

    assert _in_threads(8, work) == []
    assert len(store.list_jobs()) == 4 + 8 * 40
    assert len(store.metrics(ids[0])) == 2 * 40  # two threads per job, 40 points each
    store.close()


def test_close_closes_every_threads_connection(tmp_path: Path) -> None:
    store = Store(tmp_path / "kiln.db")
    assert _in_threads(4, lambda i: store.get_job("none")) == []
    store.close()
    assert store.get_job("none") is None  # usable again: a fresh connection for this thread
    store.close()


def test_job_ids_from_many_rapid_creations_never_collide(tmp_path: Path) -> None:
    """A sweep makes dozens of jobs in one second; DIGITS' ids had 16 random bits per second."""
    store = Store(tmp_path / "kiln.db")
    made: list[str] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        mine = [_job(store) for _ in range(250)]
        with lock:
            made.extend(mine)

    assert _in_threads(8, work) == []
    assert len(made) == len(set(made)) == 2000
    assert all(len(i.split("-")) == 3 and i[:8].isdigit() for i in made)  # YYYYMMDD-HHMMSS-xxxxxxxx
    store.close()


def test_a_taken_id_is_drawn_again_inside_the_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "kiln.db")
    drawn = iter(["20240101-000000-aaaa", "20240101-000000-aaaa", "20240101-000000-bbbb"])
    monkeypatch.setattr(store_module, "new_job_id", lambda: next(drawn))
    assert _job(store) == "20240101-000000-aaaa"
    assert _job(store) == "20240101-000000-bbbb"  # the same id drawn again: drawn once more
    with pytest.raises(JobIdTaken):  # an id chosen by the caller is never replaced silently
        store.create_job("dataset", "d", {}, "alice", job_id="20240101-000000-aaaa")
    assert store.get_job("20240101-000000-aaaa").type == "model"
    store.close()


def _fail_deletes_from(store: Store, table: str) -> None:
    store.db.execute(f"CREATE TRIGGER fail_{table} BEFORE DELETE ON {table} BEGIN SELECT RAISE(ABORT, 'boom'); END")


def test_delete_job_is_one_transaction(tmp_path: Path) -> None:
    """A delete that fails halfway changes nothing (before: the job row was gone, its rows left)."""
    store = Store(tmp_path / "kiln.db")
    job_id = _job(store)
    store.add_metrics(job_id, 1, {"loss": 0.5}, "train")
    store.add_log(job_id, "a line")
    _fail_deletes_from(store, "logs")
    with pytest.raises(sqlite3.DatabaseError):
        store.delete_job(job_id)
    assert store.get_job(job_id) is not None
    assert store.metrics(job_id) and store.history(job_id)
    store.db.execute("DROP TRIGGER fail_logs")
    store.delete_job(job_id)
    assert store.get_job(job_id) is None and store.metrics(job_id) == [] and store.logs(job_id) == []
    store.close()


def test_clear_metrics_after_is_one_transaction(tmp_path: Path) -> None:
    store = Store(tmp_path / "kiln.db")
    job_id = _job(store)
    for epoch in (1, 2, 3):
        store.add_metrics(job_id, epoch, {"loss": 1.0 / epoch}, "train")
        store.add_snapshot(job_id, epoch, f"snapshot_{epoch}.pt", {})
    _fail_deletes_from(store, "snapshots")
    with pytest.raises(sqlite3.DatabaseError):
        store.clear_metrics_after(job_id, 1)
    assert [m["epoch"] for m in store.metrics(job_id)] == [1, 2, 3]  # not cleared without the snapshots
    store.close()


def test_old_changes_are_pruned_and_readers_go_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "KEEP_CHANGES", 100)
    monkeypatch.setattr(store_module, "PRUNE_EVERY", 32)
    store = Store(tmp_path / "kiln.db")
    job_id = _job(store)
    reader_seq = store.last_change()
    for k in range(1000):
        store.set_progress(job_id, k / 1000)
    kept = store.db.execute("SELECT COUNT(*) FROM changes").fetchone()[0]
    assert 100 <= kept <= 100 + 32
    assert store.last_change() == 1001  # seq never goes back: a reader's position stays valid
    assert [c["seq"] for c in store.changes_since(store.last_change() - 5)] == list(range(997, 1002))
    behind = store.changes_since(reader_seq)  # a reader far behind gets what is left, in order
    assert behind and behind[0]["seq"] > reader_seq and behind == sorted(behind, key=lambda c: c["seq"])
    store.close()


def test_old_log_lines_are_pruned_per_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "KEEP_LOG_LINES", 50)
    monkeypatch.setattr(store_module, "PRUNE_EVERY", 16)
    store = Store(tmp_path / "kiln.db")
    chatty, quiet = _job(store, "chatty"), _job(store, "quiet")
    store.add_log(quiet, "the only line")
    for k in range(1000):
        store.add_log(chatty, f"line {k}")
    lines = store.logs(chatty, limit=10_000)
    assert 50 <= len(lines) <= 50 + 16
    assert lines[-1] == "line 999" and lines == [f"line {k}" for k in range(1000 - len(lines), 1000)]
    assert store.logs(quiet) == ["the only line"]
    store.close()
