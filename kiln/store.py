"""SQLite (WAL): the one source of truth for jobs, status history, progress, metrics, snapshots.

Every process (server, workers, CLI) opens its own Store, and a Store gives each thread its own
SQLite connection (a connection shared between threads interleaves their transactions). Every
change is one transaction. Each write also appends a row to `changes`, which the server's event
stream polls to push live updates; old `changes` and `logs` rows are pruned as new ones arrive.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATUSES = ("Initialized", "Waiting", "Running", "Done", "Aborted", "Error", "Interrupted")
ACTIVE = ("Initialized", "Waiting", "Running")
PRETRAINED = "pretrained_model"  # a job type made whole by its request; no worker runs it
STATUS_CSS = {
    "Initialized": "warning",
    "Waiting": "warning",
    "Running": "info",
    "Done": "success",
    "Aborted": "warning",
    "Error": "danger",
    "Interrupted": "warning",
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,                -- dataset | model
    name TEXT NOT NULL,
    group_name TEXT NOT NULL DEFAULT '',
    notes TEXT NOT NULL DEFAULT '',
    username TEXT,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,                      -- last time it went Running
    run_seconds REAL NOT NULL DEFAULT 0, -- time spent Running before `started`
    finished REAL,
    progress REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    error TEXT,
    params TEXT NOT NULL DEFAULT '{}', -- the form / spec / config, JSON
    dataset_id TEXT,
    pid INTEGER,
    pid_started REAL,
    abort_requested INTEGER NOT NULL DEFAULT 0,
    summary TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS status_history (
    job_id TEXT NOT NULL, status TEXT NOT NULL, ts REAL NOT NULL, note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS status_history_job ON status_history(job_id);
CREATE TABLE IF NOT EXISTS metrics (
    job_id TEXT NOT NULL, epoch REAL NOT NULL, phase TEXT NOT NULL, name TEXT NOT NULL,
    value REAL, ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_job ON metrics(job_id, phase, name);
CREATE TABLE IF NOT EXISTS snapshots (
    job_id TEXT NOT NULL, epoch REAL NOT NULL, path TEXT NOT NULL, info TEXT NOT NULL DEFAULT '{}',
    ts REAL NOT NULL, PRIMARY KEY (job_id, epoch, path)
);
CREATE TABLE IF NOT EXISTS logs (job_id TEXT NOT NULL, ts REAL NOT NULL, line TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS logs_job ON logs(job_id);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, kind TEXT NOT NULL, ts REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Job:
    """One row of `jobs`, typed: what every part of kiln reads about a job."""

    id: str
    type: str  # dataset | model | evaluation | pretrained_model
    name: str
    status: str
    created: float
    group_name: str = ""
    notes: str = ""
    username: str | None = None
    started: float | None = None  # last time it went Running
    run_seconds: float = 0.0  # time spent Running before `started`
    finished: float | None = None
    progress: float = 0.0
    message: str = ""
    error: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # the form / spec / config
    dataset_id: str | None = None
    pid: int | None = None
    pid_started: float | None = None
    abort_requested: bool = False
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """Initialized, Waiting or Running: not finished yet."""
        return self.status in ACTIVE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        data = dict(row)
        data["params"] = json.loads(data["params"] or "{}")
        data["summary"] = json.loads(data["summary"] or "{}")
        data["abort_requested"] = bool(data["abort_requested"])
        return cls(**data)


# Pruning: kept rows, and how often (every so many inserted rows) the oldest are dropped.
KEEP_CHANGES = 5000  # the event stream reads `changes` by seq, 500 per poll: far more than it lags
KEEP_LOG_LINES = 2000  # per job; the most /jobs/<id>/log.json shows
PRUNE_EVERY = 256


class JobIdTaken(ValueError):
    """A job id given to create_job already names a job."""


def new_job_id() -> str:
    """Readable, sortable ids as DIGITS made them (20160809-103210-ccbf), with 32 random bits
    after the second (create_job also retries inside its transaction, so ids it makes never collide)."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(4)


class Store:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conns: dict[int, sqlite3.Connection] = {}  # thread id -> its connection (to close them)
        self._conns_lock = threading.Lock()
        self.db.executescript(SCHEMA)

    @property
    def db(self) -> sqlite3.Connection:
        """This thread's connection: request threads, the scheduler and abort threads never share one."""
        conn = getattr(self._local, "conn", None)
        return conn if conn is not None else self._connect()

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False only so that close() may close every thread's connection
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        me = threading.get_ident()
        with self._conns_lock:
            alive = {t.ident for t in threading.enumerate()}
            for ident in [i for i in self._conns if i not in alive or i == me]:
                self._conns.pop(ident).close()  # a finished thread's (or a reused thread id's) connection
            self._conns[me] = conn
        self._local.conn = conn
        return conn

    def close(self) -> None:
        with self._conns_lock:
            conns, self._conns = list(self._conns.values()), {}
            self._local = threading.local()
        for conn in conns:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE .. COMMIT, ROLLBACK on error); nested uses join it."""
        db = self.db
        if db.in_transaction:
            yield db
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (a full disk, an interrupt)
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- writes ---------------------------------------------------------------------------------
    def _changed(self, job_id: str, kind: str) -> None:
        seq = self.db.execute(
            "INSERT INTO changes(job_id, kind, ts) VALUES (?,?,?)", (job_id, kind, time.time())
        ).lastrowid
        if seq and seq % PRUNE_EVERY == 0:  # seq never goes back (AUTOINCREMENT): readers go on from theirs
            self.db.execute("DELETE FROM changes WHERE seq<=?", (seq - KEEP_CHANGES,))

    def create_job(
        self,
        type_: str,
        name: str,
        params: dict[str, Any],
        username: str | None,
        group_name: str = "",
        dataset_id: str | None = None,
        job_id: str | None = None,
        status: str = "Initialized",
    ) -> str:
        """A new job row; ``status`` "Done" for jobs made whole by the request itself (pretrained models)."""
        assert status in ("Initialized", "Done"), status
        now = time.time()
        with self._write() as db:
            while True:  # inside the transaction: no other writer can take the id meanwhile
                jid = job_id or new_job_id()
                if db.execute("SELECT 1 FROM jobs WHERE id=?", (jid,)).fetchone() is None:
                    break
                if job_id:
                    raise JobIdTaken(f"Job id {job_id} is already taken.")
            job_id = jid
            self.db.execute(
                "INSERT INTO jobs(id, type, name, group_name, username, status, created, params, dataset_id)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (job_id, type_, name, group_name, username, status, now, json.dumps(params), dataset_id),
            )
            if status == "Done":
                self.db.execute("UPDATE jobs SET finished=?, progress=1.0 WHERE id=?", (now, job_id))
            self.db.execute("INSERT INTO status_history(job_id, status, ts) VALUES (?,?,?)", (job_id, status, now))
            self._changed(job_id, "added")
        return job_id

    def set_status(
        self,
        job_id: str,
        status: str,
        error: str | None = None,
        note: str = "",
        expect: Iterable[str] | None = None,
        pid: int | None = None,
        pid_started: float | None = None,
    ) -> bool:
        """Move a job to `status`; with `expect`, only from one of those statuses (atomic claim)."""
        assert status in STATUSES, status
        now = time.time()
        with self._write():
            row = self.db.execute("SELECT status, started, run_seconds FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None or (expect is not None and row["status"] not in tuple(expect)):
                return False
            sets: dict[str, Any] = {"status": status}
            if status == "Running":
                # abort_requested stays: an abort that came before the claim must not be lost
                sets.update(started=now, finished=None, error=None, pid=pid, pid_started=pid_started)
            elif row["status"] == "Running" and row["started"]:
                sets.update(run_seconds=row["run_seconds"] + now - row["started"], started=None)
            if status in ("Done", "Aborted", "Error", "Interrupted"):
                sets.update(finished=now, pid=None)
            if status == "Done":
                sets["progress"] = 1.0
            if error is not None:
                sets["error"] = error
            if status == "Initialized":
                sets.update(error=None, abort_requested=0)
            cols = ", ".join(f"{k}=?" for k in sets)
            self.db.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*sets.values(), job_id))
            self.db.execute(
                "INSERT INTO status_history(job_id, status, ts, note) VALUES (?,?,?,?)",
                (job_id, status, now, note or (error or "")),
            )
            self._changed(job_id, "status")
        return True

    def claim(self, job_id: str, pid: int | None = None, pid_started: float | None = None) -> bool:
        """A worker takes a queued (Initialized/Waiting) job: Running, or Aborted if an abort was
        requested first. One transaction with request_abort's, so neither can miss the other."""
        with self._write() as db:
            row = db.execute("SELECT status, abort_requested FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None or row["status"] not in ("Initialized", "Waiting"):
                return False
            if row["abort_requested"]:
                self.set_status(job_id, "Aborted", note="aborted before it started")
                return False
            return self.set_status(job_id, "Running", pid=pid, pid_started=pid_started)

    def request_abort(self, job_id: str) -> str | None:
        """Flag an active job for abort, in one transaction: a queued one becomes Aborted at once
        (returns "Aborted"), a running one keeps running until its worker stops ("Running"); None
        when the job is missing or not active."""
        with self._write() as db:
            row = db.execute("SELECT status FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None or row["status"] not in ACTIVE:
                return None
            db.execute("UPDATE jobs SET abort_requested=1 WHERE id=?", (job_id,))
            if row["status"] == "Running":
                self._changed(job_id, "attribute")
                return "Running"
            self.set_status(job_id, "Aborted", note="aborted before it started")
            return "Aborted"

    def set_progress(self, job_id: str, fraction: float, message: str = "") -> None:
        with self._write():
            self.db.execute(
                "UPDATE jobs SET progress=?, message=? WHERE id=?", (max(0.0, min(1.0, fraction)), message, job_id)
            )
            self._changed(job_id, "progress")

    def update_fields(self, job_id: str, **values: Any) -> None:
        allowed = {"name", "group_name", "notes", "summary", "params", "abort_requested", "message"}
        bad = set(values) - allowed
        if bad:
            raise ValueError(f"cannot update {sorted(bad)}")
        values = {k: json.dumps(v) if k in ("summary", "params") else v for k, v in values.items()}
        cols = ", ".join(f"{k}=?" for k in values)
        with self._write():
            self.db.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*values.values(), job_id))
            self._changed(job_id, "attribute")

    def add_metrics(self, job_id: str, epoch: float, values: dict[str, float], phase: str) -> None:
        now = time.time()
        with self._write():
            self.db.executemany(
                "INSERT INTO metrics(job_id, epoch, phase, name, value, ts) VALUES (?,?,?,?,?,?)",
                [(job_id, epoch, phase, k, float(v), now) for k, v in values.items()],
            )
            self._changed(job_id, "metrics")

    def add_snapshot(self, job_id: str, epoch: float, path: str, info: dict[str, Any]) -> None:
        with self._write():
            self.db.execute(
                "INSERT OR REPLACE INTO snapshots(job_id, epoch, path, info, ts) VALUES (?,?,?,?,?)",
                (job_id, epoch, path, json.dumps(info), time.time()),
            )
            self._changed(job_id, "snapshots")

    def add_log(self, job_id: str, line: str) -> None:
        with self._write() as db:
            rowid = db.execute(
                "INSERT INTO logs(job_id, ts, line) VALUES (?,?,?)", (job_id, time.time(), line)
            ).lastrowid
            if rowid and rowid % PRUNE_EVERY == 0:  # keep this job's last KEEP_LOG_LINES lines
                oldest_kept = db.execute(
                    "SELECT rowid FROM logs WHERE job_id=? ORDER BY rowid DESC LIMIT 1 OFFSET ?",
                    (job_id, KEEP_LOG_LINES - 1),
                ).fetchone()
                if oldest_kept:
                    db.execute("DELETE FROM logs WHERE job_id=? AND rowid<?", (job_id, oldest_kept[0]))

    def clear_metrics_after(self, job_id: str, epoch: float) -> None:
        """On resume, drop points past the last snapshot so the charts continue where they stopped."""
        with self._write():
            self.db.execute("DELETE FROM metrics WHERE job_id=? AND epoch>?", (job_id, epoch))
            self.db.execute("DELETE FROM snapshots WHERE job_id=? AND epoch>?", (job_id, epoch))
            self._changed(job_id, "metrics")

    def delete_job(self, job_id: str) -> None:
        with self._write():
            self.db.execute("DELETE FROM jobs WHERE id=?", (job_id,))
            for table in ("status_history", "metrics", "snapshots", "logs"):
                self.db.execute(f"DELETE FROM {table} WHERE job_id=?", (job_id,))
            self._changed(job_id, "deleted")

    # -- reads ----------------------------------------------------------------------------------
    def get_job(self, job_id: str) -> Job | None:
        row = self.db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def list_jobs(self, type_: str | None = None) -> list[Job]:
        if type_:
            rows = self.db.execute("SELECT * FROM jobs WHERE type=? ORDER BY created DESC", (type_,))
        else:
            rows = self.db.execute("SELECT * FROM jobs ORDER BY created DESC")
        return [Job.from_row(r) for r in rows]

    def jobs_with_status(self, statuses: Iterable[str]) -> list[Job]:
        st = tuple(statuses)
        q = f"SELECT * FROM jobs WHERE status IN ({','.join('?' * len(st))}) ORDER BY created"
        return [Job.from_row(r) for r in self.db.execute(q, st)]

    def history(self, job_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT status, ts, note FROM status_history WHERE job_id=? ORDER BY rowid", (job_id,))
        return [dict(r) for r in rows]

    def metrics(self, job_id: str) -> list[dict[str, Any]]:
        """Every metrics point in the order reported: epoch, phase, name, value and ts (when it came)."""
        rows = self.db.execute(
            "SELECT epoch, phase, name, value, ts FROM metrics WHERE job_id=? ORDER BY rowid", (job_id,)
        )
        return [dict(r) for r in rows]

    def snapshots(self, job_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT epoch, path, info FROM snapshots WHERE job_id=? ORDER BY epoch", (job_id,))
        return [{"epoch": r["epoch"], "path": r["path"], "info": json.loads(r["info"])} for r in rows]

    def logs(self, job_id: str, limit: int = 200) -> list[str]:
        rows = self.db.execute("SELECT line FROM logs WHERE job_id=? ORDER BY rowid DESC LIMIT ?", (job_id, limit))
        return [r["line"] for r in rows][::-1]

    def models_using(self, dataset_id: str) -> list[Job]:
        rows = self.db.execute("SELECT * FROM jobs WHERE type='model' AND dataset_id=?", (dataset_id,))
        return [Job.from_row(r) for r in rows]

    def last_change(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]

    def changes_since(self, seq: int) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT seq, job_id, kind FROM changes WHERE seq>? ORDER BY seq LIMIT 500", (seq,))
        return [dict(r) for r in rows]


def elapsed(job: Job, now: float | None = None) -> float:
    """Seconds spent running, including the current run."""
    now = now or time.time()
    extra = now - job.started if job.status == "Running" and job.started else 0.0
    return job.run_seconds + extra


def eta(job: Job, now: float | None = None) -> float | None:
    """DIGITS' estimate: (1 - p) * elapsed / p, over time since the job went Running."""
    if job.status != "Running" or not job.started or job.progress <= 0:
        return None
    since = (now or time.time()) - job.started
    return (1 - job.progress) * since / job.progress
