"""Who is asking: accounts (argon2 password hashes), API tokens, login sessions, the signing secret.

Two ways to log in, chosen by `KILN_AUTH` (Settings.auth_mode):
- `loopback`, the default while kiln listens on 127.0.0.1, ::1 or localhost: DIGITS' login by
  username alone, for the one person at this machine; jobs get an owner, and only the owner may
  change them. A name that has an account still needs its password.
- `accounts`, the default anywhere else: only accounts log in, with their password. An admin
  creates them (`kiln users add NAME --admin` makes the first), and may change every job.
Either way the user comes only from a session cookie signed with the data dir's secret, or from an
API token (`Authorization: Bearer ...`), never from a form field or a query parameter.

The tables live in kiln.db beside the jobs; only hashes of tokens and of session ids are stored,
so a copy of the database logs nobody in. This module knows nothing of HTTP.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sqlite3
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.jobs.errors import UserFacingError

MODES = ("loopback", "accounts")
USERNAME_RE = re.compile(r"^[a-z][a-z0-9.\-_]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
SESSION_SECONDS = 14 * 24 * 3600
TOKEN_PREFIX = "kiln_"
TOKEN_TOUCH_S = 60  # a token's last use is written at most once a minute
SECRET_FILE = "secret.key"

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,           -- argon2id (pwdlib)
    is_admin INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    hash TEXT NOT NULL UNIQUE,             -- sha256 of the token: the token itself is shown once
    created REAL NOT NULL,
    last_used REAL
);
CREATE TABLE IF NOT EXISTS sessions (
    hash TEXT PRIMARY KEY,                 -- sha256 of the session id the signed cookie carries
    username TEXT NOT NULL,
    with_password INTEGER NOT NULL,        -- 0: a username-only (loopback) login
    created REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(username);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens(username);
"""


class AccountError(UserFacingError):
    """A refused account operation (bad name, short password, unknown user ...); 400 unless said."""


class LoginFailed(UserFacingError):
    """A login that did not succeed: 401 for wrong credentials, 400 for a malformed name."""

    status = 401


@dataclass(frozen=True)
class User:
    """Who a request (or a job action) comes from.

    `loopback`: logged in to a server in loopback mode, where jobs without an owner (made by
    `kiln demo`) are anyone's, as they are for the CLI. Admins may change every job.
    """

    name: str
    is_admin: bool = False
    loopback: bool = False
    via: str = "session"  # session | token

    def __str__(self) -> str:
        return self.name


def check_username(name: str) -> str | None:
    """The problem with a username, or None if it is valid."""
    if not name:
        return "A username is required."
    if not USERNAME_RE.match(name):
        return (
            "Usernames start with a lowercase letter and contain only a-z, 0-9, '.', '-' and '_' "
            "(at most 64 characters)."
        )
    return None


def check_password(password: str) -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"Passwords have at least {MIN_PASSWORD} characters."
    if len(password) > MAX_PASSWORD:
        return f"Passwords have at most {MAX_PASSWORD} characters."
    return None


def mode_problem(settings: Any) -> str | None:
    if settings.auth_mode not in MODES:
        return f"KILN_AUTH must be one of {', '.join(MODES)} (or empty), not {settings.auth!r}."
    return None


def startup_problems(settings: Any) -> list[str]:
    """Why `kiln serve` must not start with these settings: a username-only login off loopback,
    or accounts without an admin to create them. Each message says what to do."""
    from kiln.config import LOOPBACK

    problem = mode_problem(settings)
    if problem:
        return [problem]
    if settings.auth_mode == "loopback" and settings.host not in LOOPBACK:
        return [
            f"KILN_AUTH=loopback (a username without a password) is only allowed while kiln listens on "
            f"{', '.join(sorted(LOOPBACK))}, not {settings.host}. Leave KILN_AUTH empty or set it to 'accounts'."
        ]
    if settings.auth_mode == "accounts":
        accounts = Accounts(settings.db_path)
        try:
            has_admin = accounts.has_admin()
        finally:
            accounts.close()
        if not has_admin:
            where = f"listens on {settings.host}" if settings.host not in LOOPBACK else "runs with KILN_AUTH=accounts"
            return [
                f"kiln needs accounts when it {where}, and there are none yet. Create the first admin with\n"
                f"    kiln users add NAME --admin --data-dir {settings.data_dir}\n"
                "then start kiln again; the admin adds the other users (kiln users add, or the Users page)."
            ]
    return []


# -- passwords ------------------------------------------------------------------------------------
_hasher: Any = None


def hasher() -> Any:
    """pwdlib's recommended hasher (argon2id); made on first use."""
    global _hasher
    if _hasher is None:
        from pwdlib import PasswordHash

        _hasher = PasswordHash.recommended()
    return _hasher


_dummy_hash: list[str] = []


def _waste_a_verify(password: str) -> None:
    """Verify against a hash nobody has, so an unknown name takes as long as a wrong password."""
    if not _dummy_hash:
        _dummy_hash.append(hasher().hash(secrets.token_hex(16)))
    hasher().verify(password, _dummy_hash[0])


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- the signing secret ---------------------------------------------------------------------------
def load_secret(data_dir: Path) -> bytes:
    """The data dir's signing secret (`secret.key`, mode 0600), made on first start.

    Written to a private temporary file, then linked into place: two servers starting at once agree
    on one secret, and nobody reads a half-written one. A secret readable by others is made 0600.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / SECRET_FILE
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".secret-", suffix=".tmp")  # mode 0600
        try:
            os.write(fd, secrets.token_hex(32).encode())
            os.fsync(fd)
            os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process made it first: use theirs
        finally:
            os.unlink(tmp)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, 0o600)
    secret = path.read_bytes().strip()
    if len(secret) < 32:
        raise AccountError(f"{path} is too short to be kiln's signing secret: delete it, and kiln makes a new one.")
    return secret


class SessionSigner:
    """Session ids in and out of the cookie, signed and dated (itsdangerous)."""

    def __init__(self, secret: bytes) -> None:
        from itsdangerous import URLSafeTimedSerializer

        self._serializer = URLSafeTimedSerializer(secret, salt="kiln-session")

    def dumps(self, session_id: str) -> str:
        return self._serializer.dumps(session_id)

    def loads(self, cookie: str) -> str | None:
        """The session id, or None for a cookie that is forged, tampered with or too old."""
        from itsdangerous import BadSignature

        try:
            value = self._serializer.loads(cookie, max_age=SESSION_SECONDS)
        except BadSignature:  # SignatureExpired is one
            return None
        return value if isinstance(value, str) else None


# -- the tables -----------------------------------------------------------------------------------
class Accounts:
    """Users, tokens and sessions in kiln.db (its own connection, like kiln.store.Store)."""

    def __init__(self, db_path: Path) -> None:
        Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(db_path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # users
    def get_user(self, name: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT name, is_admin, created FROM users WHERE name=?", (name,)).fetchone()
        return {"name": row["name"], "is_admin": bool(row["is_admin"]), "created": row["created"]} if row else None

    def list_users(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT u.name, u.is_admin, u.created, (SELECT COUNT(*) FROM tokens t WHERE t.username=u.name) AS tokens"
            " FROM users u ORDER BY u.name"
        )
        return [{**dict(r), "is_admin": bool(r["is_admin"])} for r in rows]

    def has_admin(self) -> bool:
        return self.db.execute("SELECT 1 FROM users WHERE is_admin=1 LIMIT 1").fetchone() is not None

    def has_users(self) -> bool:
        return self.db.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None

    def add_user(self, name: str, password: str, is_admin: bool = False) -> dict[str, Any]:
        name = name.strip()
        problem = check_username(name) or check_password(password)
        if problem:
            raise AccountError(problem)
        password_hash = hasher().hash(password)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            if self.db.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone():
                raise AccountError(f"User {name} already exists.", 409)
            self.db.execute(
                "INSERT INTO users(name, password_hash, is_admin, created) VALUES (?,?,?,?)",
                (name, password_hash, int(is_admin), time.time()),
            )
            # a username-only login of this name (loopback) no longer stands for the new account
            self.db.execute("DELETE FROM sessions WHERE username=?", (name,))
        return self.get_user(name) or {}

    def set_password(self, name: str, password: str) -> None:
        """A new password; every session of the user ends (tokens stay)."""
        problem = check_password(password)
        if problem:
            raise AccountError(problem)
        password_hash = hasher().hash(password)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            if not self.db.execute("UPDATE users SET password_hash=? WHERE name=?", (password_hash, name)).rowcount:
                raise AccountError(f"No user {name}.", 404)
            self.db.execute("DELETE FROM sessions WHERE username=?", (name,))

    def delete_user(self, name: str) -> None:
        """The user, their tokens and sessions (their jobs stay; an admin may change them)."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute("SELECT is_admin FROM users WHERE name=?", (name,)).fetchone()
            if row is None:
                raise AccountError(f"No user {name}.", 404)
            if row["is_admin"] and self.db.execute("SELECT COUNT(*) FROM users WHERE is_admin=1").fetchone()[0] == 1:
                raise AccountError(f"{name} is the last admin: make another admin first.", 409)
            self.db.execute("DELETE FROM users WHERE name=?", (name,))
            self.db.execute("DELETE FROM tokens WHERE username=?", (name,))
            self.db.execute("DELETE FROM sessions WHERE username=?", (name,))

    def verify_password(self, name: str, password: str) -> dict[str, Any] | None:
        """The user if the password is theirs; as slow for an unknown name as for a wrong password."""
        row = self.db.execute("SELECT password_hash FROM users WHERE name=?", (name,)).fetchone()
        if row is None or not password:
            _waste_a_verify(password or "x")
            return None
        valid, updated = hasher().verify_and_update(password[:MAX_PASSWORD], row["password_hash"])
        if not valid:
            return None
        if updated:  # pwdlib's parameters moved on: store the stronger hash
            self.db.execute("UPDATE users SET password_hash=? WHERE name=?", (updated, name))
        return self.get_user(name)

    # tokens
    def create_token(self, name: str, label: str = "") -> tuple[int, str]:
        """A new API token for the user: (its id, the token). Only its hash is kept: show it now."""
        if self.get_user(name) is None:
            raise AccountError(f"No user {name}: tokens belong to accounts (kiln users add {name}).", 404)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.db:
            cur = self.db.execute(
                "INSERT INTO tokens(username, label, hash, created) VALUES (?,?,?,?)",
                (name, label.strip()[:100], _sha256(token), time.time()),
            )
        return int(cur.lastrowid or 0), token

    def list_tokens(self, name: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT id, username, label, created, last_used FROM tokens"
        rows = self.db.execute(q + " WHERE username=? ORDER BY id", (name,)) if name else self.db.execute(q)
        return [dict(r) for r in rows]

    def revoke_token(self, token_id: int, name: str | None = None) -> bool:
        """Delete a token (only `name`'s when given); False if there was none."""
        if not 0 < token_id < 2**63:  # SQLite integers are 64-bit: a bigger id names no token
            return False
        with self.db:
            if name is None:
                cur = self.db.execute("DELETE FROM tokens WHERE id=?", (token_id,))
            else:
                cur = self.db.execute("DELETE FROM tokens WHERE id=? AND username=?", (token_id, name))
        return cur.rowcount > 0

    def user_for_token(self, token: str, mode: str) -> User | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        row = self.db.execute(
            "SELECT t.id, t.last_used, u.name, u.is_admin FROM tokens t JOIN users u ON u.name = t.username"
            " WHERE t.hash=?",
            (_sha256(token),),
        ).fetchone()
        if row is None:
            return None
        now = time.time()
        if not row["last_used"] or now - row["last_used"] > TOKEN_TOUCH_S:
            with self.db:
                self.db.execute("UPDATE tokens SET last_used=? WHERE id=?", (now, row["id"]))
        return User(row["name"], bool(row["is_admin"]), loopback=mode == "loopback", via="token")

    # sessions
    def create_session(self, name: str, with_password: bool) -> str:
        """A new session id for the cookie; expired sessions are swept on the way."""
        session_id = secrets.token_urlsafe(32)
        now = time.time()
        with self.db:
            self.db.execute("DELETE FROM sessions WHERE expires < ?", (now,))
            self.db.execute(
                "INSERT INTO sessions(hash, username, with_password, created, expires) VALUES (?,?,?,?,?)",
                (_sha256(session_id), name, int(with_password), now, now + SESSION_SECONDS),
            )
        return session_id

    def end_session(self, session_id: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM sessions WHERE hash=?", (_sha256(session_id),))

    def user_for_session(self, session_id: str, mode: str) -> User | None:
        """The session's user, if it still stands: a password session while its account exists;
        a username-only one only in loopback mode, and only for a name without an account."""
        row = self.db.execute(
            "SELECT s.username, s.with_password, s.expires, u.name AS account, u.is_admin"
            " FROM sessions s LEFT JOIN users u ON u.name = s.username WHERE s.hash=?",
            (_sha256(session_id),),
        ).fetchone()
        if row is None or row["expires"] < time.time():
            return None
        loopback = mode == "loopback"
        if row["with_password"]:
            if row["account"] is None:
                return None
            return User(row["account"], bool(row["is_admin"]), loopback=loopback)
        if not loopback or row["account"] is not None:
            return None
        return User(row["username"], False, loopback=True)

    # logging in
    def login(self, name: str, password: str, mode: str) -> User:
        """Check a login; raises LoginFailed with the message to show."""
        name = name.strip()
        problem = check_username(name)
        if problem:
            raise LoginFailed(problem, 400)
        if mode == "loopback" and not password and self.get_user(name) is None:
            return User(name, False, loopback=True)
        if not password:
            which = f"{name} has an account: enter its password." if mode == "loopback" else "Enter your password."
            if mode != "loopback":
                _waste_a_verify("x")
            raise LoginFailed(which)
        user = self.verify_password(name, password)
        if user is None:
            raise LoginFailed("Wrong username or password.")
        return User(user["name"], user["is_admin"], loopback=mode == "loopback")
