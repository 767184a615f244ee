"""The lab control file's reading of a lab: when `lab up` may say it is finished."""

from __future__ import annotations

from typing import Any

import pytest

from oneroot.ops.labctl import lab_finished


def node(name: str, *, top: str = "tmpfs", runlevel: str | None = "multi-user.target",
         hello: str | None = None) -> dict[str, Any]:
    return {"node": name, "top": top, "runlevel": runlevel, "hello": hello}


RW = "rw NFS layer"


@pytest.mark.parametrize(("phase", "nodes", "finished"), [
    ("up", [node("node01", top=RW, hello="hello from node01"), node("node02")], True),
    ("up", [node("node01", top=RW), node("node02")], False),  # no hello yet
    ("up", [node("node01", top=RW, hello="hi"), node("node02", runlevel=None)], False),
    ("up", [node("node02")], True),  # only tmpfs tops: no hello expected
    ("up", [], False),
    ("booting", [node("node02")], False),
    ("failed", [node("node02")], False),
])
def test_lab_finished(phase: str, nodes: list[dict[str, Any]], finished: bool) -> None:
    assert lab_finished({"phase": phase, "nodes": nodes}) is finished
