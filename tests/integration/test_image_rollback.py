"""`oneroot image rollback` on a real home: the group goes back to the version its last
rollout replaced, recorded in the pin history; refused (error + hint) with nothing to go back
to or a pin changed by hand; with reboots, its nodes are power-cycled (network boot) batch by
batch through real IPMI BMCs (ipmi_sim), and a dead BMC stops the later batches."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from oneroot.cli.main import main
from oneroot.cli.state import State
from oneroot.inventory import database
from oneroot.inventory.events import EventStore
from oneroot.model.events import BOOT_IMAGE, BootEvent
from oneroot.model.paths import Paths
from oneroot.ops.image_versions import add_version_from_tree, pin_group
from oneroot.ops.pin_history import history_file, read_history
from oneroot.ops.rollout import record_pin
from oneroot.ops.runlevel_watch import observed
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
        ("pin", "", "lab@2"), ("rollout", "lab@2", "lab@3"), ("rollback", "lab@3", "lab@2")]
    # the rollout is undone; then the pin `group add` made: the group follows its defaults
    ok(home, "image", "rollback", "compute", "--no-reboot", capsys=capsys)
    assert group_pin(home) is None
    _, err = oneroot(home, capsys, "image", "rollback", "compute", "--no-reboot", fails=True)
    assert "error: group compute has no previous image version" in err and "hint:" in err
    assert group_pin(home) is None


@pytest.mark.parametrize("case", ["no-history", "pinned-unrecorded", "unknown-group"])
def test_rollback_refused(home: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    group = {"unknown-group": "nope", "no-history": "other"}.get(case, "compute")
    ok(home, "group", "add", "other", capsys=capsys)  # no image: nothing recorded
    if case == "pinned-unrecorded":  # e.g. a pin made before hand pins were recorded
        rolled_out(home)
        state = State(paths=Paths(home=home))
        with state.store() as store:
            pin_group(store, "compute", "lab@1")
    before = group_pin(home)
    _, err = oneroot(home, capsys, "image", "rollback", group, "--no-reboot", fails=True)
    assert err.count("error:") == 1 and "hint:" in err and "Traceback" not in err
    assert group_pin(home) == before
    assert [r.action for r in read_history(Paths(home=home))] == (
        ["pin", "rollout"] if case == "pinned-unrecorded" else ["pin"])


def test_pins_by_hand_are_recorded_and_rolled_back(
        home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`group set`/`node set` changing `image` append a "pin" record (who, from, to): a
    rollback after a pin by hand goes back to the version before it, not refused."""
    rolled_out(home)
    monkeypatch.setenv("SUDO_USER", "bob")
    ok(home, "group", "set", "compute", "--set", "image=lab@1", capsys=capsys)
    ok(home, "group", "set", "compute", "--set", "bmc_user=admin", capsys=capsys)  # no pin
    ok(home, "node", "set", "node02", "--set", "image=lab@3", capsys=capsys)
    history = read_history(Paths(home=home))
    assert [(r.action, r.group, r.node, r.who, r.old, r.new) for r in history[2:]] == [
        ("pin", "compute", "", "bob", "lab@3", "lab@1"), ("pin", "", "node02", "bob", "", "lab@3")]
    assert oct(history_file(Paths(home=home)).stat().st_mode & 0o777) == "0o600"
    doc = json.loads(ok(home, "image", "rollback", "compute", "--no-reboot", "--json",
                        capsys=capsys))
    assert (doc["from"], doc["to"]) == ("lab@1", "lab@3") and group_pin(home) == "lab@3"
    doc = json.loads(ok(home, "image", "rollback", "compute", "--no-reboot", "--json",
                        capsys=capsys))  # then the rollout's
    assert (doc["from"], doc["to"]) == ("lab@3", "lab@2") and group_pin(home) == "lab@2"
    ok(home, "group", "set", "compute", "--unset", "image", capsys=capsys)
    assert read_history(Paths(home=home))[-1].new == ""
    ok(home, "image", "rollback", "compute", "--no-reboot", capsys=capsys)
    assert group_pin(home) == "lab@2"


def test_pin_by_hand_refuses_a_symlinked_history(
        home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    history_file(Paths(home=home)).unlink()  # the fixture's `group add` pin made it
    history_file(Paths(home=home)).symlink_to(target)
    _, err = oneroot(home, capsys, "group", "set", "compute", "--set", "image=lab@1",
                     fails=True)
    assert err.count("error:") == 1 and "not recorded" in err and "hint:" in err
    assert "internal error" not in err and target.read_text() == ""


@pytest.fixture
def bmcs(home: Path, tmp_path: Path,
         capsys: pytest.CaptureFixture[str]) -> Iterator[dict[str, SimulatedBmc]]:
    """node01-03 on simulated BMCs, powered on."""
    with ExitStack() as stack:
        sims = {n: stack.enter_context(SimulatedBmc(tmp_path / n, user="admin",
                                                    password=PASSWORD, powered=True))
                for n in ("node01", "node02", "node03")}
        for name, bmc in sims.items():
            ok(home, "node", "set", name, "--set", f"bmc_address={bmc.address}",
               capsys=capsys)
        yield sims


def cycles(bmc: SimulatedBmc) -> int:
    return sum(1 for r in bmc.requests() if r.startswith("set") and "power" in r)


class Nodes(threading.Thread):
    """Stands in for the nodes' boots: when a node's BMC power-cycles it, it reports what
    `oneroot serve` would record for it (the version its boot file names, resolved from the
    inventory as stored then) and then its runlevel. Nodes in `dead` never report."""

    def __init__(self, home: Path, bmcs: dict[str, SimulatedBmc], dead: set[str]) -> None:
        super().__init__(daemon=True)
        self.paths, self.bmcs, self.dead = Paths(home=home), bmcs, dead
        # The events store exists before the thread and the command under test both open it
        # (as `oneroot serve` makes it at its start): two first openers race on its schema
        # ("table node_image already exists", seen under load).
        EventStore(database.locate(self.paths, self.paths.events_db)).close()
        self.seen = {n: cycles(b) for n, b in bmcs.items()}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            status, _ = observed(self.paths)
            for name, bmc in self.bmcs.items():
                # a node boots once its BMC powered it on (the power-on stage is recorded)
                powered = name in status and status[name].stage == "power-on"
                if name in self.dead or cycles(bmc) == self.seen[name] or not powered:
                    continue
                self.seen[name] = cycles(bmc)
                image = State(paths=self.paths).cluster().node(name).image.ref
                store = EventStore(database.locate(self.paths, self.paths.events_db))
                try:
                    store.record([
                        BootEvent(time=time.time(), kind=BOOT_IMAGE, node=name,
                                  detail={"image": image}),
                        BootEvent(time=time.time(), kind="stage", node=name, stage="runlevel",
                                  detail={"status": "ok", "reported": "runlevel"})])
                finally:
                    store.close()


@pytest.fixture
def nodes(home: Path, bmcs: dict[str, SimulatedBmc],
          request: pytest.FixtureRequest) -> Iterator[Nodes]:
    n = Nodes(home, bmcs, set(getattr(request, "param", ())))
    n.start()
    yield n
    n.done.set()
    n.join()


def test_rollback_reboots_in_batches_and_stops_at_a_failure(
        home: Path, bmcs: dict[str, SimulatedBmc], nodes: Nodes,
        capsys: pytest.CaptureFixture[str]) -> None:
    rolled_out(home)
    ok(home, "node", "set", "node02", "--set", f"bmc_address=127.0.0.1:{free_port(udp=True)}",
       capsys=capsys)  # its BMC does not answer
    out, err = oneroot(home, capsys, "image", "rollback", "compute", "--batch", "1", "--json",
                       "--timeout", "30", fails=True)
    assert "error: rollback stopped at node02: its BMC refused" in err and "hint:" in err
    doc = json.loads(out)
    assert doc["to"] == "lab@2" and group_pin(home) == "lab@2"
    assert doc["nodes"]["node01"] == "runlevel on lab@2"
    assert doc["nodes"]["node02"].startswith("reboot failed")
    assert doc["nodes"]["node03"] == "re-pinned"  # its batch never started
    assert bmcs["node01"].boot == "pxe"
    assert cycles(bmcs["node01"]) > 0
    assert not any(r.startswith("set") for r in bmcs["node03"].requests())
    assert read_history(Paths(home=home))[-1].nodes == doc["nodes"]


@pytest.mark.parametrize("nodes", [{"node01"}], indirect=True)
def test_rollout_stops_at_a_canary_that_never_reaches_its_runlevel(
        home: Path, bmcs: dict[str, SimulatedBmc], nodes: Nodes,
        capsys: pytest.CaptureFixture[str]) -> None:
    out, err = oneroot(home, capsys, "image", "rollout", "lab@3", "--to", "compute",
                       "--skip-lab-try", "--canary", "1", "--batch", "1", "--timeout", "3",
                       "--json", fails=True)
    assert err.count("error:") == 1 and "hint:" in err
    assert "rollout stopped at node01" in err and "last stage: power-on" in err
    doc = json.loads(out)
    assert doc["failed"]["node"] == "node01" and doc["action"] == "rollout-stopped"
    assert doc["lab_try"] == "skipped"
    assert cycles(bmcs["node01"]) > 0
    for other in ("node02", "node03"):  # nothing else rebooted
        assert cycles(bmcs[other]) == 0
    inv = State(paths=Paths(home=home)).load()
    assert group_pin(home) == "lab@2"  # nothing else re-pinned
    assert "image" not in inv.nodes["node01"].overrides  # the canary's pin undone
    assert read_history(Paths(home=home))[-1].action == "rollout-stopped"
    # the stopped rollout pinned nothing: a rollback undoes the fixture's `group add` pin
    doc = json.loads(ok(home, "image", "rollback", "compute", "--no-reboot", "--json",
                        capsys=capsys))
    assert (doc["from"], doc["to"]) == ("lab@2", "")


def test_rollout_canary_then_batches_then_rollback(
        home: Path, bmcs: dict[str, SimulatedBmc], nodes: Nodes,
        capsys: pytest.CaptureFixture[str]) -> None:
    oneroot(home, capsys, "image", "rollout", "lab@3", "--to", "compute",
              "--skip-lab-try", "--canary", "1", "--batch", "2", "--timeout", "30")
    history = read_history(Paths(home=home))
    assert history[-1].action == "rollout" and history[-1].old == "lab@2"
    assert history[-1].nodes == {f"node0{i}": "runlevel on lab@3" for i in (1, 2, 3)}
    assert group_pin(home) == "lab@3"
    assert "image" not in State(paths=Paths(home=home)).load().nodes["node01"].overrides
    assert all(cycles(b) > 0 for b in bmcs.values())
    # its own process, as an administrator runs it (pyghmi keeps its sessions per process:
    # a second session to the same BMC in one process trips over the first one's logout)
    done = subprocess.run([sys.executable, "-m", "oneroot", "--home", str(home), "image",
                           "rollback", "compute", "--json"], capture_output=True, text=True,
                          check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["to"] == "lab@2" and group_pin(home) == "lab@2"
    assert set(doc["nodes"].values()) == {"runlevel on lab@2"}


@pytest.mark.parametrize("nodes", [{"node02"}], indirect=True)
def test_rollback_waits_for_each_batch_runlevel(
        home: Path, bmcs: dict[str, SimulatedBmc], nodes: Nodes,
        capsys: pytest.CaptureFixture[str]) -> None:
    """node01 reaches its runlevel on lab@2; node02 never does: node03's batch waits and is
    never cycled, and the failure names node02 and its last stage."""
    rolled_out(home)
    out, err = oneroot(home, capsys, "image", "rollback", "compute", "--batch", "1",
                       "--timeout", "3", "--json", fails=True)
    assert err.count("error:") == 1 and "hint:" in err
    assert "rollback stopped at node02" in err and "last stage: power-on" in err
    doc = json.loads(out)
    assert doc["failed"]["node"] == "node02" and group_pin(home) == "lab@2"
    assert doc["nodes"] == {"node01": "runlevel on lab@2",
                            "node02": "failed at power-on: no runlevel on lab@2 within 3 s",
                            "node03": "re-pinned"}
    assert cycles(bmcs["node01"]) > 0 and cycles(bmcs["node02"]) > 0
    assert not any(r.startswith("set") for r in bmcs["node03"].requests())
    assert read_history(Paths(home=home))[-1].nodes == doc["nodes"]


@pytest.mark.parametrize(("args", "message"), [
    (["lab@2"], "already pinned to lab@2"),
    (["lab@9"], "has no version 9"),
    (["lab@3", "--canary", "4"], "the group has 3 nodes"),
    (["nope@1"], "nope"),
    (["lab@3"], "rollout refused: lab try cannot run: no lab runs from"),
])
def test_rollout_refused(home: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                         message: str) -> None:
    _, err = oneroot(home, capsys, "image", "rollout", *args, "--to", "compute", fails=True)
    assert "lab try" in message or "lab try" not in err  # refused before trying
    assert err.count("error:") == 1 and "hint:" in err and message in err, err
    assert group_pin(home) == "lab@2"
    assert [r.action for r in read_history(Paths(home=home))] == ["pin"]  # the fixture's
    inv = State(paths=Paths(home=home)).load()
    assert not any("image" in n.overrides for n in inv.nodes.values())


def test_rollback_to_no_pin_unpins(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A group that followed its defaults before the rollout follows them again."""
    ok(home, "group", "set", "compute", "--unset", "image", capsys=capsys)
    rolled_out(home, old="", new="lab@3")
    doc = json.loads(ok(home, "image", "rollback", "compute", "--no-reboot", "--json",
                        capsys=capsys))
    assert (doc["from"], doc["to"]) == ("lab@3", "")
    assert group_pin(home) is None


def test_pins_made_by_add_and_apply_are_recorded(
        home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`group add`, `node add` and `inventory apply` pin like `group set`: each image they
    set (or change) is a "pin" record, so a rollback after one goes back to what was before."""
    monkeypatch.setenv("SUDO_USER", "carol")
    ok(home, "group", "add", "gpu", "--set", "image=lab@3", capsys=capsys)
    ok(home, "node", "add", "node04", "--mac", "52:54:00:00:00:04", "--ip", "10.0.0.14",
       "--group", "gpu", "--set", "image=lab@1", capsys=capsys)
    ok(home, "node", "add", "node05", "--mac", "52:54:00:00:00:05", "--ip", "10.0.0.15",
       "--group", "gpu", "--dry-run", "--set", "image=lab@1", capsys=capsys)
    exported = tmp_path / "inventory.yaml"
    ok(home, "inventory", "export", "-o", str(exported), capsys=capsys)
    exported.write_text(exported.read_text().replace("image: lab@3", "image: lab@2"))
    ok(home, "inventory", "apply", str(exported), capsys=capsys)
    assert State(paths=Paths(home=home)).load().groups["gpu"].values["image"] == "lab@2"
    history = read_history(Paths(home=home))
    assert [(r.action, r.group, r.node, r.who, r.old, r.new) for r in history
            if r.who == "carol"] == [
        ("pin", "gpu", "", "carol", "", "lab@3"), ("pin", "", "node04", "carol", "", "lab@1"),
        ("pin", "gpu", "", "carol", "lab@3", "lab@2")]
    doc = json.loads(ok(home, "image", "rollback", "gpu", "--no-reboot", "--json",
                        capsys=capsys))
    assert (doc["from"], doc["to"]) == ("lab@2", "lab@3")


def test_a_bmc_without_a_boot_option_is_cycled_anyway(
        home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The lab's BMCs (ipmi_sim running the node's VM) refuse the next boot device: a rollback
    (and a rollout) still power-cycles the node (it network-boots anyway) and waits for its
    runlevel; `oneroot power cycle --pxe` still refuses it (asked for explicitly)."""
    rolled_out(home)
    with ExitStack() as stack:
        sims = {n: stack.enter_context(SimulatedBmc(tmp_path / n, user="admin",
                                                    password=PASSWORD, powered=True,
                                                    boot_option=n != "node01"))
                for n in ("node01", "node02", "node03")}
        for name, bmc in sims.items():
            ok(home, "node", "set", name, "--set", f"bmc_address={bmc.address}",
               capsys=capsys)
        _, err = oneroot(home, capsys, "power", "cycle", "node01", "--pxe", fails=True)
        assert "error:" in err and cycles(sims["node01"]) == 0
        stand_in = stack.enter_context(_running(Nodes(home, sims, set())))
        assert stand_in.is_alive()
        doc = json.loads(ok(home, "image", "rollback", "compute", "--batch", "3", "--json",
                            "--timeout", "30", capsys=capsys))
    assert doc["nodes"]["node01"] == "runlevel on lab@2" and cycles(sims["node01"]) > 0
    assert sims["node01"].boot == "default" and sims["node02"].boot == "pxe"


@contextmanager
def _running(thread: Nodes) -> Iterator[Nodes]:
    thread.start()
    try:
        yield thread
    finally:
        thread.done.set()
        thread.join()


def test_rollback_of_a_rollout_from_a_channel_returns_to_the_version_it_ran(
        home: Path, bmcs: dict[str, SimulatedBmc], nodes: Nodes,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A group following `image=lab` runs lab@3; lab@4 is made and rolled out; a rollback
    must give back lab@3, not `lab`, which names lab@4 (or a newer, broken one) now."""
    ok(home, "group", "set", "compute", "--set", "image=lab", capsys=capsys)
    paths = Paths(home=home)
    _booted(paths, "lab@3")
    tree = home / "images" / "tree4"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/motd").write_text("v4\n")
    state = State(paths=paths)
    with state.store() as s:
        add_version_from_tree(s, paths, "lab", tree, command="test v4")
    doc = json.loads(ok(home, "image", "rollout", "lab@4", "--to", "compute", "--skip-lab-try",
                        "--canary", "1", "--batch", "3", "--timeout", "30", "--json",
                        capsys=capsys))
    assert (doc["from"], doc["from_version"], doc["to"]) == ("lab", "lab@3", "lab@4")
    doc = json.loads(ok(home, "image", "rollback", "compute", "--no-reboot", "--json",
                        capsys=capsys))
    assert (doc["from"], doc["to"]) == ("lab@4", "lab@3") and group_pin(home) == "lab@3"
    # a pin by hand off the channel records the same, and is rolled back the same way
    _booted(paths, "lab@3")  # the nodes were rebooted onto lab@3
    ok(home, "group", "set", "compute", "--set", "image=lab", capsys=capsys)
    ok(home, "group", "set", "compute", "--set", "image=lab@4", capsys=capsys)
    assert read_history(paths)[-1].old_version == "lab@3"
    ok(home, "image", "rollback", "compute", "--no-reboot", capsys=capsys)
    assert group_pin(home) == "lab@3"


def _booted(paths: Paths, image: str) -> None:
    """What serve records when node01 and node02 boot `image`."""
    store = EventStore(database.locate(paths, paths.events_db))
    try:
        store.record([BootEvent(time=time.time(), kind=BOOT_IMAGE, node=n,
                                detail={"image": image}) for n in ("node01", "node02")])
    finally:
        store.close()
