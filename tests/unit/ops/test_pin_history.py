"""Batch planning, and the pin history file: append with fsync, read back, a torn last line
ignored, a symlink or an oversized file refused, rollbacks popping rollouts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from oneroot.errors import InvalidValue
from oneroot.model.paths import Paths
from oneroot.ops import pin_history
from oneroot.ops.pin_history import (
    PinRecord,
    append_record,
    history_file,
    previous_pin,
    read_history,
)
from oneroot.ops.rollout import plan_batches

NODES = [f"n{i}" for i in range(1, 8)]


@pytest.mark.parametrize(("canary", "batch", "expected"), [
    (0, 3, [["n1", "n2", "n3"], ["n4", "n5", "n6"], ["n7"]]),
    (1, 3, [["n1"], ["n2", "n3", "n4"], ["n5", "n6", "n7"]]),
    (2, 10, [["n1", "n2"], ["n3", "n4", "n5", "n6", "n7"]]),
    (7, 2, [NODES]),
    (0, 1, [[n] for n in NODES]),
])
def test_plan_batches(canary: int, batch: int, expected: list[list[str]]) -> None:
    plan = plan_batches(NODES, batch=batch, canary=canary)
    assert plan == expected
    assert [n for b in plan for n in b] == NODES  # every node once, in order


@pytest.mark.parametrize(("canary", "batch"), [(0, 0), (-1, 2), (8, 2)])
def test_plan_batches_refuses(canary: int, batch: int) -> None:
    with pytest.raises(InvalidValue) as e:
        plan_batches(NODES, batch=batch, canary=canary)
    assert e.value.hint


def test_plan_batches_of_an_empty_group() -> None:
    assert plan_batches([], batch=4) == []


def _rec(action: str, old: str, new: str, group: str = "compute") -> PinRecord:
    return PinRecord(group=group, action=action, who="alice", when=1.0, old=old, new=new,
                     nodes={"n1": "rebooted"})


def test_history_round_trip_and_torn_line(tmp_path: Path) -> None:
    paths = Paths(home=tmp_path)
    assert read_history(paths) == []
    first, second = _rec("rollout", "lab@1", "lab@2"), _rec("rollback", "lab@2", "lab@1")
    append_record(paths, first)
    append_record(paths, second)
    with history_file(paths).open("a") as f:
        f.write('{"group": "compute", "act')  # a crash mid-write
    assert read_history(paths) == [first, second]
    assert oct(history_file(paths).stat().st_mode & 0o777) == "0o600"


def test_history_refuses_a_symlink(tmp_path: Path) -> None:
    paths = Paths(home=tmp_path)
    target = tmp_path / "elsewhere"
    target.write_text("")
    history_file(paths).symlink_to(target)
    with pytest.raises(OSError):
        append_record(paths, _rec("rollout", "lab@1", "lab@2"))
    with pytest.raises(OSError):
        read_history(paths)
    assert target.read_text() == ""


def test_history_refuses_an_oversized_file(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    paths = Paths(home=tmp_path)
    monkeypatch.setattr(pin_history, "MAX_HISTORY_BYTES", 100)
    for _ in range(3):
        append_record(paths, _rec("rollout", "lab@1", "lab@2"))
    assert os.path.getsize(history_file(paths)) > 100
    with pytest.raises(InvalidValue) as e:
        read_history(paths)
    assert e.value.hint


def test_previous_pin_pops_rollouts() -> None:
    history = [_rec("rollout", "lab@1", "lab@2"), _rec("rollout", "lab@9", "lab@8", "other"),
               _rec("rollout", "lab@2", "lab@3")]
    assert previous_pin(history, "compute") == ("lab@2", "lab@3")
    history.append(_rec("rollback", "lab@3", "lab@2"))
    assert previous_pin(history, "compute") == ("lab@1", "lab@2")
    history.append(_rec("rollback", "lab@2", "lab@1"))
    assert previous_pin(history, "compute") is None
    assert previous_pin(history, "nothing") is None
    assert previous_pin([_rec("rollout", "", "lab@2")], "compute") == ("", "lab@2")


def test_previous_pin_counts_pins_by_hand_not_node_pins() -> None:
    """A pin made by hand is undone by the next rollback like a rollout; a node's own pin
    (group "") never moves its groups."""
    history = [_rec("rollout", "lab@2", "lab@3"), _rec("pin", "lab@3", "lab@1"),
               PinRecord(group="", node="n1", action="pin", who="bob", when=2.0, old="",
                         new="lab@7")]
    assert previous_pin(history, "compute") == ("lab@3", "lab@1")
    history.append(_rec("rollback", "lab@1", "lab@3"))
    assert previous_pin(history, "compute") == ("lab@2", "lab@3")
    assert previous_pin(history, "") is None
