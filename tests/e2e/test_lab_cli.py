"""`oneroot lab up / status / console / run / down` end to end (issue 6, part 5; issue 13):
two QEMU nodes netboot from a lab that outlives the command, reach their runlevel, node01's
file appears in its layer on the server; through their BMCs (ipmi_sim on the management
network) node01 is powered off and on again and reaches its runlevel, one logs in on its
serial-over-LAN console, and a wrong BMC password is one error that changes nothing; `lab
down` leaves nothing behind, also after the supervisor was killed (SIGKILL: no teardown of
its own). One `lab up` serves every test of the module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from oneroot.lab import list_netns
from oneroot.model.paths import Paths
from oneroot.ops import labctl
from oneroot.ops.labcontrol import process_start_time
from oneroot.ops.labstatus import serial_log
from oneroot.ops.runlevel_watch import check_results
from oneroot.testing.cache import suite_cache_dir
from oneroot.testing.canary import leftovers
from oneroot.testing.terminal import Terminal

pytestmark = pytest.mark.e2e

CLI = ("import sys\n"
       "from oneroot.cli.main import main\n"
       "sys.exit(main(sys.argv[1:]))\n")


def oneroot(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@dataclass
class UpLab:
    workdir: Path
    up: subprocess.CompletedProcess[str]

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(
            oneroot("lab", "status", "--json", "--workdir", str(self.workdir)).stdout)
        return doc

    def on_server(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`oneroot lab run ARGS`: oneroot on the lab's server, where the BMCs are."""
        return oneroot("lab", "run", "--workdir", str(self.workdir), *args, timeout=timeout)

    def stages(self) -> dict[str, str]:
        report = json.loads(oneroot("--home", str(self.workdir / "home"), "status",
                                    "--json").stdout)
        return {n["node"]: n["stage"] for n in report["nodes"]}

    def wait_stage(self, node: str, stage: str, *, timeout: float) -> float:
        started = time.monotonic()
        while (now := self.stages()[node]) != stage:
            assert time.monotonic() - started < timeout, f"{node} is at {now}, not {stage}"
            time.sleep(1)
        return time.monotonic() - started


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpLab]:
    """One `lab up` of two nodes for the whole module (the boot is the slow part)."""
    if os.geteuid() != 0:
        pytest.skip("the lab creates network namespaces: run as root")
    workdir = tmp_path_factory.mktemp("lab") / "lab"
    try:
        started = time.monotonic()
        up = oneroot("lab", "up", "--nodes", "2", "--workdir", str(workdir), "--timeout",
                     "900", "--cache-dir", str(suite_cache_dir()), timeout=1000)
        print(up.stdout[-3000:], up.stderr[-3000:])
        print(f"lab up: {time.monotonic() - started:.1f} s")
        yield UpLab(workdir=workdir, up=up)
    finally:
        labctl.stop_lab(workdir)


def _said_hello(console: str) -> bool:
    return "lab: hello from this node" in console or "oneroot-lab-hello.service" in console


def test_lab_up_status_console(lab: UpLab) -> None:
    up, workdir = lab.up, lab.workdir
    assert up.returncode == 0
    assert "node01: " in up.stdout and "node02: " in up.stdout
    hello = workdir / "state/systems/node01/upper/var/tmp/hello-from-node01"
    assert hello.read_text().startswith("hello from node01: ")
    assert "fuse" in hello.read_text()  # node01's top is its rw NFS layer
    assert hello.read_text().strip() in up.stdout

    # The lab outlived `lab up`: another invocation sees it.
    status = lab.status()
    assert status["running"] and status["phase"] == "up"
    assert status["netns"] in list_netns()
    nodes = {n["node"]: n for n in status["nodes"]}
    assert {n["stage"] for n in nodes.values()} == {"runlevel"}
    assert all(n["runlevel"] and n["runlevel"].endswith(".target") for n in nodes.values())
    assert nodes["node01"]["top"] == "rw NFS layer" and nodes["node02"]["top"] == "tmpfs"
    # systemd shortens "Starting oneroot-lab-hello.service - oneroot lab: hello from this
    # node..." to the console's width (…eroot lab: hello…): match the end of the description,
    # or the unit's name in its "Finished" line (a kernel message may split one of them).
    # The console log lags the node under load, and a busy node writes many lines after it:
    # wait for the log, and read all of it.
    log = serial_log(workdir, "node01")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _said_hello(log.read_text(errors="replace")):
        time.sleep(1)
    console = oneroot("lab", "console", "node01", "--no-follow", "-n", "100000", "--workdir",
                      str(workdir))
    assert console.returncode == 0 and _said_hello(console.stdout), console.stdout[-4000:]
    # Each node was powered on by its BMC: `power-on` was its first stage.
    power = json.loads(lab.on_server("power", "status", "node[01-02]", "--json").stdout)
    assert [(r["node"], r["state"], r["bmc"]) for r in power] == [
        ("node01", "on", "10.0.1.11:623"), ("node02", "on", "10.0.1.12:623")]


def test_power_off_then_on_reaches_the_runlevel(lab: UpLab) -> None:
    node01 = next(n for n in lab.status()["nodes"] if n["node"] == "node01")
    off = lab.on_server("power", "off", "node01")
    assert off.returncode == 0, off.stderr
    assert lab.stages()["node01"] == "off"
    assert process_start_time(node01["pid"]) is None, "node01's QEMU still runs"
    shown = json.loads(lab.on_server("power", "status", "node01", "--json").stdout)
    assert shown[0]["state"] == "off"
    on = lab.on_server("power", "on", "node01")
    assert on.returncode == 0, on.stderr
    assert lab.stages()["node01"] == "power-on"
    took = lab.wait_stage("node01", "runlevel", timeout=600)
    print(f"node01: power on to runlevel in {took:.1f} s")


def test_log_in_on_the_console_and_run_a_command(lab: UpLab) -> None:
    password = (lab.workdir / "bmc" / "console-password").read_text().strip()
    term = Terminal([sys.executable, "-c", CLI, "lab", "console", "node01", "--workdir",
                     str(lab.workdir)])
    term.wait_raw(timeout=60)  # the SOL session is up
    for _ in range(3):  # the getty may be busy printing: ask for its prompt again
        term.type(b"\r")
        try:
            term.expect(b"login: ", timeout=20)
            break
        except AssertionError:
            continue
    term.type(b"root\r")
    term.expect(b"Password: ", timeout=30)
    term.type(password.encode() + b"\r")
    term.expect(b"# ", timeout=60)
    term.type(b"echo sum=$((6*7)) on $(hostname)\r")
    term.expect(b"sum=42 on node01", timeout=30)
    term.type(b"exit\r")
    term.expect(b"login: ", timeout=30)
    term.type(b"\r~.")
    code, err = term.finish()
    assert code == 0, err
    assert "closed: escape" in err


def test_a_wrong_bmc_password_is_one_error_and_changes_nothing(lab: UpLab) -> None:
    wrong = lab.workdir / "bmc" / "wrong-password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    before = lab.stages()["node02"]
    node02 = next(n for n in lab.status()["nodes"] if n["node"] == "node02")
    assert lab.on_server("node", "set", "node02", "--set",
                         f"bmc_password_file={wrong}").returncode == 0
    try:
        for args in (("power", "off", "node02"), ("console", "node02")):
            failed = lab.on_server(*args)
            lines = failed.stderr.strip().splitlines()
            assert failed.returncode != 0 and len(lines) == 2, failed.stderr
            assert lines[0].startswith("error: ") and "refused user 'admin'" in lines[0]
            assert lines[1].startswith("hint: ") and "Traceback" not in failed.stderr
            assert "not-the-password" not in failed.stdout + failed.stderr
    finally:
        lab.on_server("node", "set", "node02", "--unset", "bmc_password_file")
    after = next(n for n in lab.status()["nodes"] if n["node"] == "node02")
    assert after["vm"] == "running" and after["pid"] == node02["pid"]  # still the same VM
    assert lab.stages()["node02"] == before


# -- issue 14: lab try, rollout and rollback on the lab's nodes (the same `lab up`) --------------
PACKAGE = """set -e
d=$(mktemp -d)
mkdir -p $d/DEBIAN $d/usr/share/oneroot-e2e $d/etc/systemd/system/multi-user.target.wants
cat > $d/DEBIAN/control <<'X'
Package: oneroot-e2e-canary
Version: 2
Architecture: all
Maintainer: e2e <e2e@oneroot.invalid>
Description: lab try e2e
X
echo 2 > $d/usr/share/oneroot-e2e/version
cat > $d/etc/systemd/system/oneroot-e2e-canary.service <<'X'
[Unit]
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/bin/sh -c "cp /usr/share/oneroot-e2e/version /var/tmp/e2e-package-%H; sync"
X
ln -s ../oneroot-e2e-canary.service $d/etc/systemd/system/multi-user.target.wants/
dpkg-deb -b $d /tmp/e2e.deb >/dev/null
dpkg -i /tmp/e2e.deb >/dev/null
rm -rf $d /tmp/e2e.deb
"""
# The group's checks (all pass on lab@2), and node01's own one that fails on lab@2.
CHECKS = ("--set", "check_units=systemd-journald.service",
          "--set", "check_paths=/usr/share/oneroot-e2e/version",
          "--set", 'check_commands=test "$(cat /usr/share/oneroot-e2e/version)" = 2')
FAILING = 'check_commands=test "$(cat /usr/share/oneroot-e2e/version)" = 3'
# lab@3: its init exits at once (the kernel panics: "Attempted to kill init!")
BROKEN_INIT = ("rm -f /sbin/init && printf '#!/bin/sh\\necho broken init\\nexit 1\\n' "
               "> /sbin/init && chmod 755 /sbin/init")


def qemu_pids(workdir: Path) -> dict[str, int]:
    """The running QEMU of each of this lab's VMs, by its `-name` (BMC cycles replace them)."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"qemu-system-x86_64") and str(workdir).encode() in \
                b" ".join(argv) and b"-name" in argv:
            found[argv[argv.index(b"-name") + 1].decode()] = int(proc.name)
    return found


def images(lab: UpLab) -> dict[str, tuple[str, str]]:
    report = json.loads(oneroot("--home", str(lab.workdir / "home"), "status", "--json").stdout)
    return {n["node"]: (n["image"], n["stage"]) for n in report["nodes"]}


def timed(what: str, *args: str, lab: UpLab, on_server: bool = False,
          timeout: float = 900) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    done = (lab.on_server(*args, timeout=timeout) if on_server else
            oneroot("--home", str(lab.workdir / "home"), *args, timeout=timeout))
    print(f"{what}: {time.monotonic() - started:.1f} s, rc {done.returncode}\n"
          f"{done.stdout[-2500:]}\n{done.stderr[-2500:]}")
    return done


def test_lab_try_rollout_and_rollback(lab: UpLab) -> None:
    """Issue 14's "done when": `image exec` makes lab@2; `lab try node01 --image lab@2`
    passes without touching node01, and so do the checks the group declares; with a check of
    node01's that fails on lab@2, a rollout stops at its `lab try` (the passing checks and the
    failing one shown) and no node reboots; a rollout with one canary reboots both nodes onto lab@2
    (each runs the new package's unit); a broken lab@3 is stopped at `lab try` and no node
    reboots; `rollback` returns the group to lab@2; the nodes not rebooted keep their version
    and their runlevel throughout."""
    w, upper = lab.workdir, lab.workdir / "state/systems/node01/upper"
    assert timed("image exec (package)", "image", "exec", "lab", "--", "sh", "-c", PACKAGE,
                 lab=lab).returncode == 0
    hello = (upper / "var/tmp/hello-from-node01").read_text()
    pids, before = qemu_pids(w), images(lab)
    assert set(pids) >= {"node01", "node02"} and {s for _, s in before.values()} == {"runlevel"}
    assert timed("group set (checks)", "group", "set", "default", *CHECKS,
                 lab=lab).returncode == 0

    # Run on the lab's server with no lab at --workdir, lab try takes the lab's network for
    # a real one (lab.canarynet): the canary boots in a private namespace mirroring it, and
    # the lab's nodes on br0 stand for the real cluster's other hosts.
    tried = timed("lab try node01 --image lab@2 (a real network)", "lab", "try", "node01",
                  "--image", "lab@2", "--json", "--workdir", str(w / "no-lab"), lab=lab,
                  on_server=True, timeout=700)
    assert tried.returncode == 0, tried.stderr
    doc = json.loads(tried.stdout)
    assert doc["passed"] and doc["image"] == "lab@2" and doc["canary"] == "try-node01"
    assert doc["network"] == "private", doc
    netns = lab.status()["netns"]
    # No frame of the canary's ever crossed the lab's bridge (its learned MACs), and its
    # namespace, uplink, route and tables are gone.
    fdb = subprocess.run(["bridge", "-n", netns, "fdb", "show", "br", "br0"],
                         capture_output=True, text=True, check=True).stdout
    assert doc["mac"] and doc["mac"] not in fdb.lower(), fdb
    # nothing of the canary's private network: no namespace named, no state file, no process
    # naming its MAC (a namespace lives on in its processes after its name is gone)
    assert leftovers(doc["mac"]) == []
    assert doc["address"] not in subprocess.run(["ip", "-n", netns, "route"], text=True,
                                                capture_output=True, check=True).stdout
    assert "oneroot_try" not in subprocess.run(["ip", "netns", "exec", netns, "nft", "list",
                                                "tables"], text=True, capture_output=True,
                                               check=True).stdout
    assert doc["address"] not in ("10.0.0.11", "10.0.0.12") and doc["stage"] == "runlevel"
    assert [(c["kind"], c["result"]) for c in doc["checks"]] == [
        ("unit", "pass"), ("path", "pass"), ("command", "pass")], doc["checks"]
    # node01 untouched: same VM, same version, its layer unchanged by the canary's boot
    assert qemu_pids(w) == pids and images(lab) == before
    assert (upper / "var/tmp/hello-from-node01").read_text() == hello
    assert not (upper / "var/tmp/e2e-package-node01").exists()
    inv = json.loads(oneroot("--home", str(w / "home"), "node", "list", "--json").stdout)
    assert [n["name"] for n in inv] == ["node01", "node02"]  # the canary's entry is gone
    assert doc["address"] not in (w / "home/run/ganesha/ganesha.conf").read_text()
    assert not list((w / "home/lab-try").glob("*.json"))

    # node01's own failing check: the rollout's `lab try` (node01's config) stops it
    assert timed("node set (failing check)", "node", "set", "node01", "--set", FAILING,
                 lab=lab).returncode == 0
    out = timed("rollout lab@2, a failing check", "image", "rollout", "lab@2", "--to",
                "default", "--timeout", "400", lab=lab, on_server=True)
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and [ln[:6] for ln in lines[-2:]] == ["error:", "hint: "], \
        out.stderr
    assert ("rollout stopped before any node: lab try of node01 on lab@2 failed at stage "
            "checks: 1 of 4 checks did not pass: command test") in lines[-2]
    rows = [ln for ln in out.stdout.splitlines() if ln.startswith(("unit ", "command "))]
    assert any(r.startswith("unit systemd-journald.service") and " pass " in r
               for r in rows), out.stdout  # a passing check, shown
    assert any(r.startswith(f"command {FAILING.partition('=')[2]}") and " fail " in r and
               "exit 1" in r for r in rows), out.stdout  # the failing one, shown
    assert qemu_pids(w) == pids and images(lab) == before  # no node rebooted
    assert timed("node set (no failing check)", "node", "set", "node01", "--unset",
                 "check_commands", lab=lab).returncode == 0

    started = time.time()
    out = timed("rollout lab@2, 1 canary", "image", "rollout", "lab@2", "--to", "default",
                "--canary", "1", "--batch", "1", "--skip-lab-try", "--json", lab=lab,
                on_server=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["nodes"] == {"node01": "runlevel on lab@2",
                                               "node02": "runlevel on lab@2"}
    assert {n: i for n, (i, _) in images(lab).items()} == {"node01": "lab@2",
                                                            "node02": "lab@2"}
    deadline = time.monotonic() + 120  # the package's unit runs after multi-user.target
    while not (upper / "var/tmp/e2e-package-node01").exists():
        assert time.monotonic() < deadline, "node01 does not run the new package"
        time.sleep(1)
    assert (upper / "var/tmp/e2e-package-node01").read_text() == "2\n"
    # node02 is ephemeral (a tmpfs top: nothing it writes reaches the server): it reported
    # the group's 3 checks on lab@2 at its runlevel, passed: the package's file, version 2
    reported = check_results(Paths(home=w / "home"), "node02", since=started)
    assert sorted(reported) == [0, 1, 2] and all(r.passed for r in reported.values()), \
        reported

    assert timed("image exec (broken init)", "image", "exec", "lab", "--", "sh", "-c",
                 BROKEN_INIT, lab=lab).returncode == 0
    pids, before = qemu_pids(w), images(lab)
    out = timed("rollout lab@3", "image", "rollout", "lab@3", "--to", "default",
                "--timeout", "400", lab=lab, on_server=True)
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and [ln[:6] for ln in lines] == ["error:", "hint: "], out.stderr
    assert "rollout stopped before any node: lab try of node01 on lab@3 failed" in lines[0]
    assert "no node was pinned or rebooted" in lines[1]
    assert qemu_pids(w) == pids and images(lab) == before  # no node rebooted

    # pinned by hand anyway (no reboot), then rolled back: lab@2 again, nodes never rebooted
    assert timed("group set image=lab@3", "group", "set", "default", "--set", "image=lab@3",
                 lab=lab).returncode == 0
    out = timed("rollback", "image", "rollback", "default", "--no-reboot", "--json", lab=lab)
    assert out.returncode == 0, out.stderr
    assert (json.loads(out.stdout)["from"], json.loads(out.stdout)["to"]) == ("lab@3", "lab@2")
    group = json.loads(oneroot("--home", str(w / "home"), "group", "list", "--json").stdout)
    assert next(g for g in group if g["name"] == "default")["values"]["image"] == "lab@2"
    assert qemu_pids(w) == pids and images(lab) == before  # same VMs, lab@2, at runlevel
    # and no NFS error on them while lab@3 was made, tried, pinned and rolled back under
    # their mounted roots (their consoles since their last boot, the rollout's)
    for node in ("node01", "node02"):
        console = serial_log(w, node).read_text(errors="replace")
        assert "Stale file handle" not in console, (node, console[-2000:])


def test_lab_try_of_a_union_server_node(lab: UpLab) -> None:
    """node01's configuration as a `union=server` node's (`--set`): its upper is copied for
    the canary (serve runs in the lab's mount namespace: the copy goes through ganesha's
    `/proc/PID/root`), the canary boots on that snapshot (node01's own file is there) and
    passes; node01 keeps its VM, version and layer, and the snapshot is gone after."""
    w, upper = lab.workdir, lab.workdir / "state/systems/node01/upper"
    hello = (upper / "var/tmp/hello-from-node01").read_text()
    pids, before = qemu_pids(w), images(lab)
    tried = timed("lab try node01 --set union=server", "lab", "try", "node01", "--set",
                  "union=server", "--set", "check_paths=/var/tmp/hello-from-node01", "--json",
                  "--workdir", str(w), lab=lab, timeout=700)
    assert tried.returncode == 0, tried.stderr
    assert "node01 has union=server: its upper copied for the canary" in tried.stderr
    doc = json.loads(tried.stdout)
    assert doc["passed"] and doc["network"] == "lab", doc
    assert ("path", "/var/tmp/hello-from-node01", "pass") in [
        (c["kind"], c["target"], c["result"]) for c in doc["checks"]], doc["checks"]
    assert qemu_pids(w) == pids and images(lab) == before
    assert (upper / "var/tmp/hello-from-node01").read_text() == hello
    assert not (w / "state/systems/try-node01/snapshot").exists()


def test_lab_down_after_the_supervisor_was_killed(lab: UpLab) -> None:
    """A supervisor killed without its teardown: `lab down` finds the rest by recorded ids."""
    workdir = lab.workdir
    status = lab.status()
    netns = status["netns"]
    pids = [n["pid"] for n in status["nodes"]]
    os.kill(status["supervisor_pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30  # until the killed process is gone (reaped), not 0.5 s
    while (phase := lab.status()["phase"]) != "crashed" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert phase == "crashed"
    down = oneroot("lab", "down", "--workdir", str(workdir))
    assert down.returncode == 0, down.stderr
    assert netns not in list_netns()
    for pid in pids:
        assert process_start_time(pid) is None, f"QEMU {pid} survived"
    assert not labctl.mounts_under(workdir)
    assert lab.status()["phase"] == "down"
