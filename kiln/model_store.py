"""The model store: folders or web addresses of models to import as pretrained models (DIGITS 5.4).

``KILN_MODEL_STORE_URL`` is a comma-separated list of stores. A store is a folder on the server
or an http(s) address laid out as DIGITS' was: ``master.json`` (``{"msg": "...", "children":
["lenet", ...]}``; a folder without one lists its sub-folders), and per child a folder holding
``info.json`` (a download archive's keys), the files it names, and an optional ``aux.json``.

Only the files info.json names are fetched, each capped in size, into a private folder; the
import then goes through kiln.pretrained like an uploaded archive.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.pretrained import PretrainedError

FILE_KEYS = ("snapshot file", "model file", "network file", "labels file", "mean file")
MAX_JSON_BYTES = 1 << 20
MAX_FILE_BYTES = 2 << 30
TIMEOUT_S = 20


class StoreError(PretrainedError):
    """A store that cannot be read, or a model it does not have."""

    def __init__(self, message: str) -> None:
        super().__init__("store", message)


@dataclass(frozen=True)
class Entry:
    base: str
    dir_name: str
    info: dict[str, Any]
    aux: dict[str, Any]

    @property
    def id(self) -> str:
        """Stable across refreshes and restarts (DIGITS made a new uuid each time)."""
        return hashlib.sha256(f"{self.base}\0{self.dir_name}".encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"dir_name": self.dir_name, "id": self.id, "info": self.info, "aux": self.aux}


def bases(setting: str) -> list[str]:
    return [b.strip().rstrip("/") for b in setting.split(",") if b.strip()]


def _is_url(base: str) -> bool:
    return base.startswith(("http://", "https://"))


def _read(base: str, *parts: str, limit: int = MAX_JSON_BYTES) -> bytes | None:
    """A file of the store, or None when it has none; StoreError when it cannot be read."""
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\\" in part:
            raise StoreError(f"{part!r} is not a file name a store may use.")
    if not _is_url(base):
        path = Path(base).joinpath(*parts)
        if not path.is_file():
            return None
        if path.stat().st_size > limit:
            raise StoreError(f"{path} is larger than {limit >> 20} MB.")
        return path.read_bytes()
    url = base + "/" + "/".join(urllib.parse.quote(p) for p in parts)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as res:  # http(s) only: _is_url
            data = res.read(limit + 1)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise StoreError(f"{url}: HTTP {exc.code}.") from None
    except (urllib.error.URLError, OSError) as exc:
        raise StoreError(f"{url}: cannot be reached ({exc}).") from None
    if len(data) > limit:
        raise StoreError(f"{url} is larger than {limit >> 20} MB.")
    return data


def _json(base: str, *parts: str) -> dict[str, Any] | None:
    data = _read(base, *parts)
    if data is None:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        raise StoreError(f"{base}/{'/'.join(parts)} is not valid JSON.") from None
    return value if isinstance(value, dict) else None


def _children(base: str) -> tuple[str, list[str]]:
    master = _json(base, "master.json")
    if master is not None:
        children = [c for c in master.get("children") or [] if isinstance(c, str)]
        return str(master.get("msg") or ""), children
    if _is_url(base):
        raise StoreError(f"{base} has no master.json.")
    folder = Path(base)
    if not folder.is_dir():
        raise StoreError(f"{base} is not a folder.")
    return "", sorted(p.name for p in folder.iterdir() if (p / "info.json").is_file())


def list_store(setting: str) -> dict[str, Any]:
    """DIGITS' /store/models: ``{base: {base_url, welcome_msg, model_list}}``; a store that fails
    answers its ``error`` instead of hiding the others."""
    out: dict[str, Any] = {}
    for base in bases(setting):
        try:
            msg, children = _children(base)
            entries = [e for e in (_entry(base, c) for c in children) if e is not None]
            out[base] = {"base_url": base, "welcome_msg": msg, "model_list": [e.to_dict() for e in entries]}
        except StoreError as exc:
            out[base] = {"base_url": base, "welcome_msg": "", "model_list": [], "error": exc.message}
    return out


def _entry(base: str, child: str) -> Entry | None:
    try:
        info = _json(base, child, "info.json")
    except StoreError:
        return None
    if info is None:
        return None
    return Entry(base, child, info, _json(base, child, "aux.json") or {})


def find(setting: str, model_id: str) -> Entry:
    for base in bases(setting):
        try:
            _, children = _children(base)
        except StoreError:
            continue
        for child in children:
            entry = _entry(base, child)
            if entry is not None and entry.id == model_id:
                return entry
    raise StoreError(f"No model {model_id!r} in the model store.")


def fetch(entry: Entry, folder: Path) -> Path:
    """info.json and the files it names, into ``folder`` (created); returns it."""
    folder.mkdir(parents=True)
    (folder / "info.json").write_text(json.dumps(entry.info), encoding="utf-8")
    for key in FILE_KEYS:
        name = entry.info.get(key)
        if not isinstance(name, str) or not name:
            continue
        data = _read(entry.base, entry.dir_name, name, limit=MAX_FILE_BYTES)
        if data is None:
            shutil.rmtree(folder, ignore_errors=True)
            raise StoreError(f"{entry.dir_name}: info.json names {name!r}, which the store does not have.")
        (folder / Path(name).name).write_bytes(data)
    return folder
