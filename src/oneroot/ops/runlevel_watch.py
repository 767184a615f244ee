"""Waiting for rebooted nodes: each must report its `runlevel` stage after its power cycle,
on the version it was moved to (what `oneroot serve` recorded its boot file naming). Shared by
`image rollout` and `image rollback`."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from oneroot.inventory import database
from oneroot.inventory.events import EventStore, NodeStatus
from oneroot.model.checks import CheckResult
from oneroot.model.events import CHECK_EVENT
from oneroot.model.paths import Paths

DEFAULT_TIMEOUT = 600.0  # seconds a node may take from its power cycle to its runlevel
POLL = 1.0
RUNLEVEL = "runlevel"


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeFailure:
    node: str
    stage: str  # the last stage it reported since its reboot ("-": none)
    running: str  # the version it runs ("-": unknown)
    reason: str

    def as_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


Watch = Callable[[Sequence[str], str, float], NodeFailure | None]


def observed(paths: Paths) -> tuple[dict[str, NodeStatus], dict[str, str]]:
    """Each node's last stage, and the version it runs (its last boot file's), in one read."""
    if not database.exists(paths, paths.events_db):
        return {}, {}
    events = EventStore(database.locate(paths, paths.events_db))
    try:
        return events.status(), events.booted_images()
    finally:
        events.close()


def check_results(paths: Paths, node: str, *, since: float) -> dict[int, CheckResult]:
    """`node`'s check results reported at or after `since`, by check index (the last report
    of each wins: a node reports each once per boot)."""
    if not database.exists(paths, paths.events_db):
        return {}
    events = EventStore(database.locate(paths, paths.events_db))
    try:
        found = events.node_events(node, CHECK_EVENT, since=since)
    finally:
        events.close()
    results = {}
    for ev in found:
        index = ev.detail.get("check", "")
        if index.isdigit():
            results[int(index)] = CheckResult(index=int(index),
                                              passed=ev.detail.get("status") == "ok",
                                              message=ev.detail.get("message", ""))
    return results


def _verdict(node: str, status: NodeStatus | None, running: str, target: str,
             since: float) -> NodeFailure | bool | None:
    """True: reached its runlevel on `target`; a failure: reached it on another version;
    None: not there yet."""
    if status is None or status.time < since or status.stage != RUNLEVEL:
        return None
    if running == target:
        return True
    return NodeFailure(node=node, stage=RUNLEVEL, running=running,
                       reason=f"it reached its runlevel on {running}, not {target}")


def checks_verdict(paths: Paths, node: str, declared: Sequence[str], *, running: str,
                   since: float) -> NodeFailure | None:
    """A node at its runlevel: the first of its `declared` checks (their texts, in index
    order) it did not report as passed since `since`, as a failure (it reports every check
    before `runlevel`, so one missing now is one it did not run)."""
    if not declared:
        return None
    found = check_results(paths, node, since=since)
    for index, text in enumerate(declared):
        result = found.get(index)
        if result is None or not result.passed:
            said = "no result" if result is None else f"failed: {result.message or '-'}"
            return NodeFailure(node=node, stage="checks", running=running,
                               reason=f"it reached its runlevel, but its check {text} "
                                      f"{said}")
    return None


def runlevel_watch(paths: Paths, *, timeout: float, poll: float = POLL,
                   checks: Mapping[str, Sequence[str]] | None = None) -> Watch:
    """Wait until every node named reports `runlevel` (newer than `since`) and runs `target`;
    the first that does not within `timeout`, or runs another version, or did not pass one
    of its `checks` (node → the texts of its declared checks), is the failure."""
    def watch(names: Sequence[str], target: str, since: float) -> NodeFailure | None:
        deadline = time.monotonic() + timeout
        pending = list(names)
        while True:
            status, booted = observed(paths)
            still = []
            for n in pending:
                verdict = _verdict(n, status.get(n), booted.get(n, "-"), target, since)
                if verdict is True:
                    verdict = checks_verdict(paths, n, (checks or {}).get(n, ()),
                                             running=target, since=since) or True
                if isinstance(verdict, NodeFailure):
                    return verdict
                if verdict is None:
                    still.append(n)
            pending = still
            if not pending:
                return None
            if time.monotonic() >= deadline:
                n, s = pending[0], status.get(pending[0])
                last = s.stage if s is not None and s.time >= since else "-"
                return NodeFailure(node=n, stage=last, running=booted.get(n, "-"),
                                   reason=f"no runlevel on {target} within {timeout:g} s")
            time.sleep(poll)
    return watch
