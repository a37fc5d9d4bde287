"""/files/<path> serves a job folder's files and nothing outside the jobs folder.

httpx (and browsers) remove `..` segments from a URL before sending it, so a literal
`/files/x/../../kiln.db` would reach no route at all. These requests spell the dots and
slashes percent-encoded, which clients send as they are and the server decodes into the path
the route sees: the guard itself has to refuse them.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from kiln.store import Store
from tests.conftest import Kiln, ThreadServer


@pytest.fixture
def job_files(kiln: Kiln) -> str:
    job_id = kiln.store.create_job("dataset", "d", {"spec": {}}, "alice")
    folder = kiln.settings.jobs_dir / job_id
    folder.mkdir(parents=True)
    (folder / "labels.txt").write_text("cat\ndog\n")
    secret = kiln.settings.data_dir / "jobs-private" / "secret.txt"  # shares the jobs folder's prefix
    secret.parent.mkdir()
    secret.write_text("secret")
    return job_id


def test_a_job_file_is_served(kiln: Kiln, job_files: str) -> None:
    res = kiln.client.get(f"/files/{job_files}/labels.txt")
    assert res.status_code == 200 and res.text == "cat\ndog\n"
    assert kiln.client.get(f"/files/{job_files}").status_code == 404  # a folder is not a file


@pytest.mark.parametrize(
    "path",
    [
        "{job}/%2e%2e/%2e%2e/kiln.db",  # data_dir/kiln.db
        "{job}/..%2f..%2fkiln.db",
        "%2e%2e/kiln.db",
        "%2e%2e/jobs-private/secret.txt",  # a sibling folder whose name starts like "jobs"
        "%2Fetc%2Fhostname",  # an absolute path
    ],
)
def test_paths_outside_the_jobs_folder_are_refused(kiln: Kiln, job_files: str, path: str) -> None:
    url = "/files/" + path.format(job=job_files)
    res = kiln.client.get(url, headers={"Accept": "application/json"})
    assert res.status_code == 404, (url, res.status_code, res.content[:40])
    assert res.json()["error"]["type"] == "NotFound"


def test_raw_dot_segments_over_a_socket(tmp_path: Path) -> None:
    """The same with literal `..` in the request line, as a raw HTTP client can send it."""
    server = ThreadServer(tmp_path / "data", scheduler=False)
    try:
        store = Store(server.settings.db_path)
        job_id = store.create_job("dataset", "d", {"spec": {}}, "alice")
        store.close()
        (server.settings.jobs_dir / job_id).mkdir(parents=True)
        (server.settings.jobs_dir / job_id / "labels.txt").write_text("a\n")
        host, port = server.url.removeprefix("http://").split(":")

        def raw_get(path: str) -> bytes:
            with socket.create_connection((host, int(port)), timeout=10) as conn:
                conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                reply = b""
                while chunk := conn.recv(65536):
                    reply += chunk
            return reply

        assert raw_get(f"/files/{job_id}/labels.txt").startswith(b"HTTP/1.1 200")
        for path in (f"/files/{job_id}/../../kiln.db", "/files/../kiln.db", f"/files/{job_id}/../../../etc/hostname"):
            reply = raw_get(path)
            assert reply.startswith(b"HTTP/1.1 404"), (path, reply[:200])
            assert b"SQLite format" not in reply
    finally:
        server.stop()
