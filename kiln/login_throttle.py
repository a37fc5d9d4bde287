"""Failed logins, counted per username: after LIMIT failures within WINDOW seconds, that name's
logins are refused until its oldest failure ages out, before any password is checked.

A guesser then gets LIMIT tries per WINDOW per account, and the server spends no argon2 time on
the refused ones (the hash is deliberately slow, so unthrottled guessing is also a way to load the
server). Counting by name, not by address, keeps one user's typos from locking out a classroom
behind one NAT; the cost is that someone can lock an account for WINDOW by guessing at it, which
then ends by itself. The counts live in the server's memory: a restart forgets them.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

LIMIT = 5  # failed logins per name ...
WINDOW = 300.0  # ... within this many seconds
MAX_NAMES = 10_000  # names tracked at once: random names cannot grow the table without bound


class LoginThrottle:
    """Thread-safe failure counts for the sync /login route (one per app)."""

    def __init__(self, limit: int = LIMIT, window: float = WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def wait_for(self, name: str) -> int:
        """Whole seconds until a login as `name` may be tried again; 0 when it may be tried now."""
        with self._lock:
            recent = self._recent(name.strip().casefold())
            if len(recent) < self.limit:
                return 0
            return max(1, math.ceil(recent[0] + self.window - self.clock()))

    def failed(self, name: str) -> None:
        with self._lock:
            key = name.strip().casefold()
            if key not in self._failures and len(self._failures) >= MAX_NAMES:
                self._forget_oldest()
            recent = self._recent(key)
            recent.append(self.clock())
            self._failures[key] = recent

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name.strip().casefold(), None)

    def _recent(self, key: str) -> deque[float]:
        """This name's failures still inside the window (older ones dropped)."""
        recent = self._failures.get(key, deque())
        cutoff = self.clock() - self.window
        while recent and recent[0] <= cutoff:
            recent.popleft()
        if not recent:
            self._failures.pop(key, None)
        return recent

    def _forget_oldest(self) -> None:
        for key in [k for k in list(self._failures) if not self._recent(k)]:
            self._failures.pop(key, None)
        if len(self._failures) >= MAX_NAMES:  # all recent: the name whose last failure is oldest goes
            del self._failures[min(self._failures, key=lambda k: self._failures[k][-1])]
