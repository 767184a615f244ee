"""oneroot.testing.wait.until: returns once the condition holds, fails past its bound."""

from __future__ import annotations

import pytest

from oneroot.testing.wait import until


def test_returns_the_time_it_took_once_ready() -> None:
    calls = iter([False, False, True])
    took = until(lambda: next(calls), "the third call", 5.0, lambda: "", interval=0.01)
    assert 0.0 < took < 5.0


def test_fails_past_the_bound_with_what_was_seen() -> None:
    with pytest.raises(AssertionError, match=r"no the answer within 0.05 s:\nstill nothing"):
        until(lambda: False, "the answer", 0.05, lambda: "still nothing", interval=0.01)
