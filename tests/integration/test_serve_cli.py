"""`oneroot serve` as users run it, in a namespace, against real clients: discovery and
adoption of an unknown machine, live inventory changes, SIGHUP reload, clean SIGTERM, the
status API and `oneroot status`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from oneroot.testing.dhcpclient import Udhcpc
from oneroot.testing.netns import Link, linked_namespaces
from oneroot.testing.wait import until

pytestmark = pytest.mark.integration

ONEROOT = [sys.executable, "-m", "oneroot"]
UNKNOWN_MAC = "52:54:00:bb:00:07"


@dataclass
class Serve:
    link: Link
    home: Path
    tmp: Path
    proc: subprocess.Popen[bytes]
    log: Path
    dhcp: Udhcpc

    def oneroot(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ONEROOT, "--home", str(self.home), *args], check=check,
                              capture_output=True, text=True, timeout=60)

    def udhcpc(self) -> dict[str, str]:
        client = self.link.client
        return self.dhcp.lease(lambda *argv, timeout: client.ns.run(*argv, timeout=timeout,
                                                                    check=False),
                               client.interface)

    def wait_log(self, text: str, timeout: float = 60, *, count: int = 1) -> None:
        """Until `text` is logged `count` times (a bound for a loaded machine: serve's start
        took over 15 s there)."""
        deadline = time.monotonic() + timeout
        while self.log.read_text().count(text) < count:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged:\n{self.log.read_text()}")
            time.sleep(0.05)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    dhcp = Udhcpc.install(tmp_path)
    home = tmp_path / "home"
    with linked_namespaces("10.88.0.1/24") as link:
        base = [*ONEROOT, "--home", str(home)]
        subprocess.run([*base, "init", "--server", "10.88.0.1", "--subnet", "10.88.0.0/24",
                        "--interface", link.server.interface, "--image-root", str(tmp_path),
                        "--boot-dir", str(tmp_path / "boot"), "--http-port", "8080"],
                       check=True, capture_output=True)
        subprocess.run([*base, "settings", "set", "discovery=true", "pool_start=10.88.0.200",
                        "pool_end=10.88.0.210"], check=True, capture_output=True)
        link.client.set_mac(UNKNOWN_MAC)
        log = tmp_path / "serve.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(link.server.cmd(*base, "serve", "--no-nfs"), stdout=out,
                                    stderr=subprocess.STDOUT)
        s = Serve(link=link, home=home, tmp=tmp_path, proc=proc, log=log, dhcp=dhcp)
        try:
            s.wait_log("serve.started")
            yield s
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_discover_adopt_reload_status_and_stop(serve: Serve) -> None:
    # An unknown machine gets a pool address (discovery is on) and is listed.
    env = serve.udhcpc()
    assert env.get("ip", "").startswith("10.88.0.2"), serve.log.read_text()
    pool_ip = env["ip"]
    unknown = json.loads(serve.oneroot("node", "unknown", "--json").stdout)
    assert [u["mac"] for u in unknown] == [UNKNOWN_MAC]
    assert unknown[0]["address"] == pool_ip

    # Adopting it keeps its address; the running server sees the change without a restart.
    serve.oneroot("node", "add", "found01", "--from-unknown", UNKNOWN_MAC)
    assert json.loads(serve.oneroot("node", "unknown", "--json").stdout) == []
    serve.wait_log("inventory.reloaded")
    env = serve.udhcpc()
    assert env["ip"] == pool_ip
    assert env.get("hostname") == "found01"
    assert env.get("boot_file") == "undionly.kpxe"

    # The status API and `oneroot status` show the node's last stage: both read the store,
    # which serve writes a moment after the ACK (a batch writer), so each is waited for.
    def served() -> str:
        doc = json.loads(serve.link.server.ns.run(
            sys.executable, "-c",
            "import urllib.request;print(urllib.request.urlopen("
            "'http://10.88.0.1:8080/api/v1/status', timeout=5).read().decode())").stdout)
        return _stage_of("found01", doc)

    def stored() -> str:
        return _stage_of("found01", json.loads(serve.oneroot("status", "--json").stdout))
    until(lambda: served() == "dhcp.ack", "found01's ACK in /api/v1/status", 60, served)
    until(lambda: stored() == "dhcp.ack", "found01's ACK in oneroot status", 60, stored)

    # SIGHUP reloads; SIGTERM stops cleanly with exit status 0.
    reloads = serve.log.read_text().count("inventory.reloaded")
    serve.proc.send_signal(signal.SIGHUP)
    serve.wait_log("inventory.reloaded", count=reloads + 1)
    serve.proc.send_signal(signal.SIGTERM)
    assert serve.proc.wait(60) == 0
    assert "serve.stopped" in serve.log.read_text()
    assert "Traceback" not in serve.log.read_text()


def _stage_of(node: str, status: dict[str, Any]) -> str:
    """`node`'s stage in a status document (`/api/v1/status`, `oneroot status --json`)."""
    return str({n["node"]: n["stage"] for n in status["nodes"]}.get(node))


def test_unknown_machine_gets_nothing_without_discovery(serve: Serve) -> None:
    before = serve.log.read_text().count("inventory.reloaded")
    serve.oneroot("settings", "set", "discovery=false")
    # settings too take effect without a restart: in serve's main process (DHCP) and in its
    # HTTP worker (one by default), each logging its own reload; either may be first
    serve.wait_log("inventory.reloaded", count=before + 2)
    assert serve.udhcpc() == {}
    assert "dhcp.offer" not in serve.log.read_text()
