"""`lab try`'s checks: the canary is given exactly NODE's checks (its groups', its own, and
`--set`'s), its results are judged from the events store (a failed or missing one fails the
try at stage `checks`), and what the canary said is printed escaped. A rollout's rebooted
nodes must pass theirs too."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from oneroot.cli.lab_try import show_checks, try_failed
from oneroot.inventory.events import EventStore
from oneroot.model import Group, resolve_cluster
from oneroot.model.checks import CheckKind, declared_checks
from oneroot.model.events import BOOT_IMAGE, CHECK_EVENT, BootEvent
from oneroot.model.paths import Paths
from oneroot.ops.lab_try import CHECKS, TryResult, judge_checks, plan_try
from oneroot.ops.runlevel_watch import runlevel_watch
from oneroot.testing.inventory import make_inventory, make_node

CHECKS_DECLARED = declared_checks(["ssh.service"], ["/usr/bin/true"], ["test -d /run"])


def test_the_canary_is_given_exactly_the_nodes_checks() -> None:
    inv = make_inventory(
        nodes=[make_node(1, groups=("default", "gpu"), check_commands=("nvidia-smi",))],
        groups=[Group(name="gpu", values={"check_units": ("nvidia-persistenced.service",)})],
        image_root="/srv/images/default")
    plan = plan_try(inv, "node01", sets={"check_paths": ("/dev/nvidia0",)})
    assert [(c.kind, c.target) for c in plan.checks] == [
        (CheckKind.UNIT, "nvidia-persistenced.service"), (CheckKind.PATH, "/dev/nvidia0"),
        (CheckKind.COMMAND, "nvidia-smi")]
    assert plan.check_overrides == {"check_commands": ("nvidia-smi",),
                                    "check_paths": ("/dev/nvidia0",)}
    # The canary's inventory entry (NODE's groups + these overrides, as `canary_entry` adds
    # it) resolves to the same checks: what the server gives the canary is what is judged.
    canary = dataclasses.replace(make_node(9, name=plan.canary, groups=plan.groups),
                                 overrides={**plan.check_overrides, "ephemeral": True})
    served = resolve_cluster(inv.replace(nodes={**inv.nodes, plan.canary: canary}))
    assert served.nodes[plan.canary].profile.checks == plan.checks
    # a node without checks: none, and nothing added to its canary's entry
    bare = plan_try(make_inventory(nodes=1, image_root="/srv/images/default"), "node01")
    assert bare.checks == () and bare.check_overrides == {}


def _reported(tmp_path: Path, results: dict[int, tuple[str, str]]) -> Paths:
    paths = Paths(home=tmp_path)
    store = EventStore(paths.events_db)
    try:
        store.record([BootEvent(time=100.0, kind=CHECK_EVENT, node="try-node01",
                                detail={"check": str(i), "status": s, "message": m})
                      for i, (s, m) in results.items()]
                     + [BootEvent(time=1.0, kind=CHECK_EVENT, node="try-node01",  # old boot
                                  detail={"check": "0", "status": "failed", "message": ""})])
    finally:
        store.close()
    return paths


def _judged(paths: Path | Paths) -> tuple[TryResult, list[str]]:
    assert isinstance(paths, Paths)
    said: list[str] = []
    result = TryResult(node="node01", canary="try-node01", image="lab@2", address="10.0.0.254",
                       stage="runlevel")
    judge_checks(paths, result, CHECKS_DECLARED, since=50.0, progress=said.append, grace=0)
    return result, said


def test_every_check_passed_passes(tmp_path: Path) -> None:
    result, said = _judged(_reported(tmp_path, {0: ("ok", "exit 0: active"),
                                                1: ("ok", "exit 0: "), 2: ("ok", "exit 0: ")}))
    assert result.passed and result.stage == "runlevel"
    assert [c.verdict for c in result.checks] == ["pass"] * 3
    assert said[0] == "try-node01: check unit ssh.service: pass (exit 0: active)"
    assert result.as_json()["checks"][0] == {"kind": "unit", "target": "ssh.service",
                                             "result": "pass", "message": "exit 0: active"}


def test_a_failed_or_missing_check_fails_the_try_at_stage_checks(tmp_path: Path) -> None:
    result, _ = _judged(_reported(tmp_path, {0: ("ok", ""), 1: ("failed", "exit 1: no such "
                                                                          "path")}))
    assert not result.passed and result.stage == CHECKS
    assert [c.verdict for c in result.checks] == ["pass", "fail", "no result"]
    assert result.reason == ("2 of 3 checks did not pass: path /usr/bin/true (fail); "
                             "command test -d /run (no result)")
    error = try_failed(result)
    assert error.message.startswith("lab try of node01 on lab@2 failed at stage checks: 2 of 3")
    assert error.exit_code == 1


def test_what_the_canary_said_is_printed_escaped(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    hostile = "[bold red]PASSED[/bold red]\x1b[2J\x07"
    result, _ = _judged(_reported(tmp_path, {0: ("ok", hostile), 1: ("ok", ""),
                                             2: ("ok", "")}))
    show_checks(result)
    out = capsys.readouterr().out
    assert "[bold red]PASSED[/bold red]" in out  # shown as written, not read as markup
    assert "\x1b" not in out and "\x07" not in out and "\\x1b[2J\\x07" in out


def _rebooted(tmp_path: Path, second: str) -> Paths:
    """node01 rebooted onto lab@2 at t=100: its two check results, then its runlevel."""
    paths = Paths(home=tmp_path)
    store = EventStore(paths.events_db)
    try:
        store.record([
            BootEvent(time=100.0, kind=BOOT_IMAGE, node="node01", detail={"image": "lab@2"}),
            *(BootEvent(time=101.0, kind=CHECK_EVENT, node="node01",
                        detail={"check": str(i), "status": s, "message": "exit 1: nope"})
              for i, s in enumerate(("ok", second)) if s),
            BootEvent(time=102.0, kind="stage", node="node01", stage="runlevel")])
    finally:
        store.close()
    return paths


@pytest.mark.parametrize(("second", "failure"), [
    ("ok", None),
    ("failed", "it reached its runlevel, but its check path /b failed: exit 1: nope"),
    ("", "it reached its runlevel, but its check path /b no result"),
])
def test_a_rollouts_rebooted_node_must_pass_its_checks(tmp_path: Path, second: str,
                                                      failure: str | None) -> None:
    watch = runlevel_watch(_rebooted(tmp_path, second), timeout=0.1, poll=0.01,
                           checks={"node01": ("unit a.service", "path /b")})
    failed = watch(["node01"], "lab@2", 50.0)
    if failure is None:
        assert failed is None
    else:
        assert failed is not None and (failed.node, failed.stage, failed.running,
                                       failed.reason) == ("node01", "checks", "lab@2", failure)
    # without checks declared, the runlevel alone passes
    assert runlevel_watch(_rebooted(tmp_path, second), timeout=0.1)(["node01"], "lab@2",
                                                                   50.0) is None
