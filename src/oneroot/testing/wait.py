"""Waiting for a condition another process or thread brings about, in tests and benches."""

from __future__ import annotations

import time
from collections.abc import Callable


def until(ready: Callable[[], bool], what: str, timeout: float, why: Callable[[], str], *,
          interval: float = 0.1) -> float:
    """Poll READY every INTERVAL seconds; return the seconds it took. Past TIMEOUT, fail with
    an AssertionError naming WHAT and WHY's account (a log, a state) of what was seen."""
    started = time.monotonic()
    while not ready():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"no {what} within {timeout} s:\n{why()}")
        time.sleep(interval)
    return time.monotonic() - started
