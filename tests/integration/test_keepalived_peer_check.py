"""The peer check of `oneroot nfs keepalived`: a host on the nodes' segment that is not one of
the boot servers sends VRRP adverts claiming to be a better master of server A's service
address. With keepalived's defaults (multicast, or unicast without `check_unicast_src`), A
takes them for a peer's and drops its address, and every node mounting from it hangs. The
config oneroot renders sends adverts to its peers only and drops adverts from anyone else:
A keeps its address. Needs root (namespaces) and keepalived.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oneroot.lab import Lab
from oneroot.lab.netns import Client
from oneroot.model.inventory import settings_from_dict
from oneroot.render.keepalived import keepalived_context, render_keepalived
from oneroot.testing.netns import STATE_DIR

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces)"),
    pytest.mark.skipif(shutil.which("keepalived") is None, reason="needs keepalived"),
]

ONEROOT = [sys.executable, "-m", "oneroot"]
HA = "a:10.92.0.102:10.92.0.2 b:10.92.0.103:10.92.0.3"
SERVICE_A = "10.92.0.102"
ATTACK_SECONDS = 6.0


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab.create(subnet="10.92.0.0/24", server_address="10.92.0.1", state_dir=STATE_DIR,
                    router_advertisements=False) as made:
        yield made


def _holds(lab: Lab, ns: Client) -> bool:
    out = lab.run_in_ns(["ip", "-4", "-o", "addr", "show", "dev", "eth0"], netns=ns.netns,
                        check=False).stdout
    return f" {SERVICE_A}/" in out


def _attack(lab: Lab, attacker: Client) -> subprocess.Popen[bytes]:
    return lab.popen_in_ns([*ONEROOT[:1], "-m", "oneroot.testing.vrrp", "--to", "10.92.0.2",
                            "--vrid", "51", "--address", SERVICE_A, "--priority", "254",
                            "--seconds", str(ATTACK_SECONDS)], netns=attacker.netns,
                           what="vrrp attacker")


def _run_attack(lab: Lab, server: Client, attacker: Client, proc: subprocess.Popen[bytes],
                log: Path) -> bool:
    """Whether server A still held its address all through the attack."""
    deadline = time.monotonic() + 30
    while not _holds(lab, server):  # A alone: master of its address after ~3 s
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    forger = _attack(lab, attacker)
    kept = True
    while forger.poll() is None:
        kept = kept and _holds(lab, server)
        time.sleep(0.1)
    assert forger.returncode == 0
    return kept


def test_adverts_from_a_host_that_is_no_peer_are_ignored(lab: Lab, tmp_path: Path) -> None:
    home = tmp_path / "home"
    subprocess.run([*ONEROOT, "--home", str(home), "init", "--server", SERVICE_A, "--subnet",
                    "10.92.0.0/24", "--interface", "eth0"], check=True, capture_output=True)
    subprocess.run([*ONEROOT, "--home", str(home), "settings", "set", f"ha_servers={HA}"],
                   check=True, capture_output=True)
    attacker = lab.add_client("10.92.0.66/24")
    # Without the check (keepalived's unicast default): the forged adverts win.
    unchecked = lab.add_client("10.92.0.2/24")
    ctx = keepalived_context(settings_from_dict({"ha_servers": HA, "subnet": "10.92.0.0/24"}),
                             "a", interface="eth0", notify=("/bin/true",))
    conf = tmp_path / "unchecked.conf"
    conf.write_text(render_keepalived(dataclasses.replace(ctx, check_peers=False)))
    log = tmp_path / "unchecked.log"
    with log.open("ab") as out:
        proc = lab.popen_in_ns(["keepalived", "-n", "-l", "-P", "-f", str(conf), "-p",
                                str(tmp_path / "u.pid"), "-r", str(tmp_path / "u-vrrp.pid")],
                               netns=unchecked.netns, what="keepalived unchecked", stdout=out,
                               stderr=subprocess.STDOUT)
    try:
        assert not _run_attack(lab, unchecked, attacker, proc, log), \
            "the forged adverts did not take the address: the attack tests nothing"
    finally:
        lab.stop_process(proc)
        lab.run_in_ns(["ip", "link", "set", "eth0", "down"], netns=unchecked.netns)
    # oneroot's config: A keeps its address through the same attack.
    server = lab.add_client("10.92.0.2/24")
    log = tmp_path / "oneroot-keepalived.log"
    with log.open("ab") as out:
        proc = lab.popen_in_ns([*ONEROOT, "--home", str(home), "nfs", "keepalived", "a"],
                               netns=server.netns, what="oneroot nfs keepalived", stdout=out,
                               stderr=subprocess.STDOUT)
    record = home / "run" / "ganesha-instances" / "notify.log"
    try:
        assert _run_attack(lab, server, attacker, proc, log), log.read_text()[-3000:]
        assert proc.poll() is None
        # keepalived ran oneroot's notify; without Ceph it says why it did nothing.
        deadline = time.monotonic() + 60
        while "a MASTER error: ganesha instances that fail over need nfs_server=ganesha-ceph" \
                not in (record.read_text() if record.exists() else ""):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
    finally:
        lab.stop_process(proc)
