"""`oneroot image rollback` on a real home: the group goes back to the version its last
rollout replaced, recorded in the pin history; refused (error + hint) with nothing to go back
to or a pin changed by hand; with reboots, its nodes are power-cycled (network boot) batch by
batch through real IPMI BMCs (ipmi_sim), and a dead BMC stops the later batches."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from oneroot.cli.main import main
from oneroot.cli.state import State
from oneroot.model.paths import Paths
from oneroot.ops.image_versions import add_version_from_tree, pin_group
from oneroot.ops.pin_history import read_history
from oneroot.ops.rollout import record_pin
from oneroot.testing.bmc import SimulatedBmc
from oneroot.testing.ports import free_port

PASSWORD = "pw-rollback"


def oneroot(home: Path, capsys: pytest.CaptureFixture[str], *args: str,
            fails: bool = False) -> tuple[str, str]:
    """Run the CLI in this process; it must succeed (or, with `fails`, must not)."""
    code = main(["--home", str(home), *args])
    out, err = capsys.readouterr()
    assert (code != 0) if fails else (code == 0), err
    return out, err


def ok(home: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> str:
    return oneroot(home, capsys, *args)[0]


def group_pin(home: Path) -> object:
    return State(paths=Paths(home=home)).load().groups["compute"].values.get("image")


@pytest.fixture
def home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """Image lab with versions 1-3; group compute (node01-03) pinned to lab@2."""
    h = tmp_path / "home"
    root = h / "images" / "lab"
    (root / "etc").mkdir(parents=True)
    (root / "etc/motd").write_text("v1\n")
    pw = tmp_path / "bmc.pw"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    ok(h, "init", "--image-root", str(tmp_path / "default"), "--state-dir",
       str(tmp_path / "systems"), capsys=capsys)
    ok(h, "image", "use", str(root), "--name", "lab", capsys=capsys)
    state = State(paths=Paths(home=h))
    for n in (2, 3):
        tree = h / "images" / f"tree{n}"
        (tree / "etc").mkdir(parents=True)
        (tree / "etc/motd").write_text(f"v{n}\n")
        with state.store() as store:
            add_version_from_tree(store, state.paths, "lab", tree, command=f"test v{n}")
    ok(h, "group", "add", "compute", "--set", "image=lab@2", "--set", "bmc_user=admin",
       "--set", f"bmc_password_file={pw}", capsys=capsys)
    for i in (1, 2, 3):
        ok(h, "node", "add", f"node0{i}", "--mac", f"52:54:00:00:00:0{i}", "--ip",
           f"10.0.0.1{i}", "--group", "compute", capsys=capsys)
    return h


def rolled_out(home: Path, old: str = "lab@2", new: str = "lab@3") -> None:
    """What a rollout leaves: the group pinned to `new`, recorded."""
    state = State(paths=Paths(home=home))
    with state.store() as store:
        assert pin_group(store, "compute", new) == old
    record_pin(state.paths, "compute", action="rollout", who="test", old=old, new=new,
               nodes={"node01": "runlevel"})


def test_rollback_no_reboot_repins_and_records(home: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    rolled_out(home)
    monkeypatch.setenv("SUDO_USER", "alice")
    doc = json.loads(ok(home, "image", "rollback", "compute", "--no-reboot", "--batch", "2",
                        "--json", capsys=capsys))
    assert (doc["from"], doc["to"], doc["who"]) == ("lab@3", "lab@2", "alice")
    assert doc["batches"] == [["node01", "node02"], ["node03"]]
    assert doc["nodes"] == {f"node0{i}": "re-pinned" for i in (1, 2, 3)}
    assert group_pin(home) == "lab@2"
    history = read_history(Paths(home=home))
    assert [(r.action, r.old, r.new) for r in history] == [
        ("rollout", "lab@2", "lab@3"), ("rollback", "lab@3", "lab@2")]
    # the one rollout is undone: nothing further back to return to
    _, err = oneroot(home, capsys, "image", "rollback", "compute", "--no-reboot", fails=True)
    assert "error: group compute has no previous image version" in err and "hint:" in err
    assert group_pin(home) == "lab@2"


@pytest.mark.parametrize("case", ["no-history", "pinned-by-hand", "unknown-group"])
def test_rollback_refused(home: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    group = "nope" if case == "unknown-group" else "compute"
    if case == "pinned-by-hand":
        rolled_out(home)
        ok(home, "group", "set", "compute", "--set", "image=lab@1", capsys=capsys)
    before = group_pin(home)
    _, err = oneroot(home, capsys, "image", "rollback", group, "--no-reboot", fails=True)
    assert err.count("error:") == 1 and "hint:" in err and "Traceback" not in err
    assert group_pin(home) == before
    assert [r.action for r in read_history(Paths(home=home))] == (
        ["rollout"] if case == "pinned-by-hand" else [])


@pytest.fixture
def bmcs(home: Path, tmp_path: Path,
         capsys: pytest.CaptureFixture[str]) -> Iterator[dict[str, SimulatedBmc]]:
    """node01 and node03 on simulated BMCs (powered on); node02's BMC does not answer."""
    with ExitStack() as stack:
        sims = {n: stack.enter_context(SimulatedBmc(tmp_path / n, user="admin",
                                                    password=PASSWORD, powered=True))
                for n in ("node01", "node03")}
        for name, bmc in sims.items():
            ok(home, "node", "set", name, "--set", f"bmc_address={bmc.address}",
               capsys=capsys)
        ok(home, "node", "set", "node02", "--set",
           f"bmc_address=127.0.0.1:{free_port(udp=True)}", capsys=capsys)
        yield sims


def test_rollback_reboots_in_batches_and_stops_at_a_failure(
        home: Path, bmcs: dict[str, SimulatedBmc], capsys: pytest.CaptureFixture[str]) -> None:
    rolled_out(home)
    out, err = oneroot(home, capsys, "image", "rollback", "compute", "--batch", "1", "--json",
                       fails=True)
    assert "error: node02: reboot failed" in err and "hint:" in err
    doc = json.loads(out)
    assert doc["to"] == "lab@2" and group_pin(home) == "lab@2"
    assert doc["nodes"]["node01"] == "rebooted"
    assert doc["nodes"]["node02"].startswith("reboot failed")
    assert doc["nodes"]["node03"] == "re-pinned"  # its batch never started
    assert bmcs["node01"].boot == "pxe"
    assert any(r.startswith("set") and "power" in r for r in bmcs["node01"].requests())
    assert not any(r.startswith("set") for r in bmcs["node03"].requests())
    assert read_history(Paths(home=home))[-1].nodes == doc["nodes"]
