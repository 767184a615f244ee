"""The lab network as root: namespace, bridge, taps, RAs and teardown, also after a crash;
and the test namespaces of `oneroot.testing.netns`, which are built on it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from oneroot.lab.netns import Lab, LabState, list_netns
from oneroot.testing.netns import linked_namespaces

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                       reason="creating network namespaces needs root and iproute2"),
]


def ip_links(netns: str | None = None) -> str:
    cmd = ["ip", "-br", "link"] if netns is None else ["ip", "-n", netns, "-br", "link"]
    return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_lab_up_and_down_leaves_nothing(tmp_path: Path) -> None:
    host_links_before = ip_links()
    with Lab.create(subnet="10.0.0.0/24", state_dir=tmp_path) as lab:
        assert lab.netns in list_netns()
        assert lab.state_file.is_file()
        tap = lab.add_tap()
        client = lab.add_client("10.0.0.50/24")
        links = ip_links(lab.netns)
        assert "br0" in links and tap.name in links
        addrs = lab.run_in_ns(["ip", "-4", "-br", "addr", "show", "dev", "br0"]).stdout
        assert "10.0.0.1/24" in addrs
        bridge = Path("/sys/class/net")  # read inside the namespace: ip netns exec remounts it
        fwd = lab.run_in_ns(["cat", str(bridge / "br0/bridge/forward_delay"),
                             str(bridge / "br0/bridge/stp_state")]).stdout.split()
        assert fwd == ["0", "0"]
        master = lab.run_in_ns(["cat", str(bridge / "tap0/master/uevent")]).stdout
        assert "INTERFACE=br0" in master
        # A server started in the namespace answers a client on the bridge.
        (tmp_path / "www").mkdir()
        (tmp_path / "www" / "hello").write_text("hello from the lab\n")
        server = lab.popen_in_ns([sys.executable, "-m", "http.server", "--bind", "10.0.0.1",
                                  "--directory", str(tmp_path / "www"), "8080"],
                                 what="http", stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        # Until the server listens (this gave it 5 s: short for a loaded machine).
        fetch = ("import sys, time, urllib.request\n"
                 "deadline = time.monotonic() + 60\n"
                 "while time.monotonic() < deadline:\n"
                 "    try: sys.stdout.write(urllib.request.urlopen("
                 "'http://10.0.0.1:8080/hello', timeout=10).read().decode()); break\n"
                 "    except OSError: time.sleep(0.1)\n")
        got = lab.run_in_ns([sys.executable, "-c", fetch], netns=client.netns, timeout=90).stdout
        assert got == "hello from the lab\n"
        # The RA sender configures a SLAAC address in the client namespace.
        assert wait_until(lambda: "fd00:1ab:" in lab.run_in_ns(
            ["ip", "-6", "-br", "addr", "show", "dev", "eth0"], netns=client.netns).stdout,
            timeout=60)  # an RA every 2 s, then DAD: seconds, more on a loaded machine
        pids = [p.pid for p in lab.state.processes]
        assert server.pid in pids and len(pids) == 2  # the RA sender and the server
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    assert lab.netns not in list_netns() and client.netns not in list_netns()
    assert ip_links() == host_links_before
    assert not lab.state_file.exists() and not (tmp_path / lab.state.name).exists()


def test_cleanup_after_a_crash(tmp_path: Path) -> None:
    # A child process builds a lab, starts a server in it, then dies by SIGKILL.
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from oneroot.lab import Lab
        lab = Lab.create(state_dir=Path({str(tmp_path)!r}))
        lab.add_tap()
        lab.add_client()
        lab.popen_in_ns(["sleep", "300"], what="server")
        print(lab.netns, flush=True)
        time.sleep(300)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    netns = child.stdout.readline().strip()
    assert netns in list_netns()
    state = LabState.from_json(next(tmp_path.glob("*.json")).read_text())
    orphans = [p.pid for p in state.processes]
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert Lab.cleanup_stale(tmp_path) == [netns]
    assert netns not in list_netns() and f"{netns}-c0" not in list_netns()
    assert wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in orphans), 30)
    assert list(tmp_path.glob("*.json")) == []


def test_cleanup_stale_spares_live_labs(tmp_path: Path) -> None:
    with Lab.create(state_dir=tmp_path, router_advertisements=False) as lab:
        assert Lab.cleanup_stale(tmp_path) == []
        assert lab.netns in list_netns()


def test_linked_namespaces_connect_and_leave_nothing(tmp_path: Path) -> None:
    with linked_namespaces("10.99.0.1/24", "10.99.0.2/24", state_dir=tmp_path) as link:
        names = {link.server.ns.name, link.client.ns.name}
        assert names <= set(list_netns())
        link.client.ns.run("busybox", "ping", "-c", "1", "-W", "5", "10.99.0.1")  # or raises
        sleeper = subprocess.Popen(link.server.cmd("sleep", "600"))
        assert len(list(tmp_path.glob("*.json"))) == 1  # what a crashed run's successor reads
    assert not names & set(list_netns())
    assert sleeper.wait(10) == -signal.SIGTERM  # a process left inside is stopped
    assert list(tmp_path.glob("*.json")) == []


def test_linked_namespaces_are_removed_when_the_body_fails(tmp_path: Path) -> None:
    names: set[str] = set()
    with pytest.raises(RuntimeError, match="test body"), \
            linked_namespaces("10.99.1.1/24", state_dir=tmp_path) as link:
        names = {link.server.ns.name, link.client.ns.name}
        raise RuntimeError("test body")
    assert names and not names & set(list_netns())
