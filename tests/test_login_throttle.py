"""The failed-login throttle on its own, with a clock the test moves: the limit, the window, a
success clearing the count, names compared as typed logins are, and a bounded table."""

from __future__ import annotations

import pytest

from kiln import login_throttle
from kiln.login_throttle import LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limit_within_the_window_then_the_oldest_failure_ages_out() -> None:
    clock = Clock()
    throttle = LoginThrottle(limit=3, window=60, clock=clock)
    for step in range(3):
        assert throttle.wait_for("alice") == 0
        throttle.failed("alice")
        clock.now += 10 * (step + 1)  # failures at 1000, 1010, 1030
    clock.now = 1031.5
    assert throttle.wait_for("alice") == 29  # until 1060, when the first failure is a window old
    assert throttle.wait_for("bob") == 0
    clock.now = 1060.0
    assert throttle.wait_for("alice") == 0  # two failures left in the window: one more try
    throttle.failed("alice")
    assert throttle.wait_for("alice") == 10  # until 1070, when the one at 1010 ages out


def test_a_success_clears_the_count_and_names_compare_as_logins_do() -> None:
    throttle = LoginThrottle(limit=2, window=60, clock=Clock())
    throttle.failed("alice")
    throttle.succeeded(" Alice ")
    throttle.failed("alice")
    assert throttle.wait_for("alice") == 0
    throttle.failed("ALICE")
    assert throttle.wait_for("alice") == 60


def test_random_names_cannot_grow_the_table_without_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(login_throttle, "MAX_NAMES", 3)
    clock = Clock()
    throttle = LoginThrottle(limit=2, window=60, clock=clock)
    for i in range(10):
        throttle.failed(f"name{i}")
        clock.now += 1
    assert len(throttle._failures) == 3 and "name9" in throttle._failures
