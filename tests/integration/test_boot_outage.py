"""A server that dies takes no booting node with it (issue 16): two `oneroot serve` on one
PostgreSQL (`oneroot.testing.multiserver`), each with its host address and a service address
that `oneroot nfs keepalived` holds (setting `ha_servers`). Nodes boot from A; A is killed
(SIGKILL to everything in its namespace, its link down); the nodes boot again, the whole PXE
sequence with real clients (`oneroot.testing.pxeboot`), and B answers: the same address and
the same files by hash, every address it names alive (its own, or a service address
keepalived moved to it), and `oneroot status` shows B booted them. A pool client that stays
up (udhcpc, bound by A) renews after A's death and keeps its address: B, whose view never saw
that lease, reads it from the database. Needs root."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from oneroot.lab.netns import Client
from oneroot.rootspec import NfsLayer, parse
from oneroot.testing.dhcpclient import Udhcpc, UdhcpcEvents
from oneroot.testing.multiserver import SUBNET, ServeCluster, serve_cluster
from oneroot.testing.netns import available
from oneroot.testing.postgres import PostgresServer
from oneroot.testing.pxeboot import TRIES, PxeBoot, pxe_boot
from oneroot.testing.wait import until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not available(), reason="needs root and iproute2"),
    pytest.mark.skipif(shutil.which("keepalived") is None, reason="needs keepalived"),
]

SERVICE = {"a": IPv4Address("10.89.0.102"), "b": IPv4Address("10.89.0.103")}
NODES = {"node01": ("10.89.1.50", None), "node02": ("10.89.1.51", "a")}  # address, server=
RENEW_TIMEOUT = 10  # udhcpc -T: seconds its RENEW waits before it REBINDs (broadcast)


def _mac(cluster: ServeCluster, ns: Client) -> str:
    return cluster.lab.run_in_ns(["cat", f"/sys/class/net/{ns.interface}/address"],
                                 netns=ns.netns).stdout.strip()


def _holds(cluster: ServeCluster, name: str, address: IPv4Address) -> bool:
    out = cluster.lab.run_in_ns(["ip", "-4", "-o", "addr", "show"], check=False,
                                netns=cluster.servers[name].ns.netns).stdout
    return f" {address}/" in out


def _lease(cluster: ServeCluster, udhcpc: Udhcpc, ns: Client) -> dict[str, str]:
    return udhcpc.lease(lambda *argv, timeout: cluster.lab.run_in_ns(
        list(argv), netns=ns.netns, check=False, timeout=timeout), ns.interface, tries=TRIES)


def _start_renewer(cluster: ServeCluster, udhcpc: Udhcpc, ns: Client, directory: Path
                   ) -> tuple[subprocess.Popen[bytes], UdhcpcEvents]:
    """A pool client that stays up: udhcpc bound (by whoever answers now), renewing."""
    argv, events = udhcpc.running(ns.interface, directory, "-T", str(RENEW_TIMEOUT))
    proc = cluster.lab.popen_in_ns(argv, netns=ns.netns, what="udhcpc renewer",
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    until(lambda: [kind for kind, _ in events.read()] == ["deconfig", "bound"],
          "the renewer bound", 60, lambda: str(events.read()))
    return proc, events


def _renew(proc: subprocess.Popen[bytes], events: UdhcpcEvents
           ) -> tuple[str, dict[str, str], float]:
    """SIGUSR1: udhcpc renews now (RENEW unicast to its server id; without an answer,
    REBIND broadcast); its next event, and how long it took."""
    seen = len(events.read())
    os.kill(proc.pid, signal.SIGUSR1)
    took = until(lambda: len(events.read()) > seen, "the renewer's next event", 60,
                 lambda: str(events.read()))
    kind, env = events.read()[seen]
    return kind, env, took


def _kill(cluster: ServeCluster, name: str) -> None:
    """Server `name` dies: its link down, SIGKILL to every process in its namespace."""
    netns = cluster.servers[name].ns.netns
    cluster.lab.run_in_ns(["ip", "link", "set", "eth0", "down"], netns=netns)
    pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True,
                          check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def test_a_node_that_boots_while_its_server_is_dead_boots_from_the_other(
        tmp_path: Path, postgres_server: PostgresServer) -> None:
    ha = " ".join(f"{n}:{SERVICE[n]}:{SUBNET.network_address + 2 + i}"
                  for i, n in enumerate(SERVICE))
    with serve_cluster(tmp_path, postgres_server.new_schema_url(),
                       settings=[f"ha_servers={ha}"]) as cluster:
        lab, a, b = cluster.lab, cluster.servers["a"], cluster.servers["b"]
        udhcpc = Udhcpc.install(tmp_path)
        nodes = {name: lab.add_client(None) for name in NODES}
        pool, renewer = lab.add_client(None), lab.add_client(None)
        marks = {name: len(s.log.read_text()) for name, s in cluster.servers.items()}
        for name, (ip, server) in NODES.items():
            cluster.oneroot("a", "node", "add", name, "--mac", _mac(cluster, nodes[name]),
                            "--ip", ip, *(("--set", f"server={server}") if server else ()))
        kernel, initramfs = os.urandom(2 << 20), os.urandom(1 << 20)
        (a.boot_dir / "vmlinuz").write_bytes(kernel)
        (a.boot_dir / "initramfs.img").write_bytes(initramfs)
        keepalived = {name: lab.popen_in_ns(
            [sys.executable, "-m", "oneroot", "--home", str(s.home), "nfs", "keepalived", name],
            netns=s.ns.netns, what=f"keepalived {name}", stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT) for name, s in cluster.servers.items()}

        def state() -> str:
            return "\n".join(f"{n}: {s.log.read_text()[-1500:]}" for n, s in
                             cluster.servers.items())

        started = time.monotonic()
        until(lambda: all(_holds(cluster, n, SERVICE[n]) for n in SERVICE) and all(
            "inventory.reloaded nodes=2" in s.log.read_text()[marks[n]:]
            for n, s in cluster.servers.items()) and (b.boot_dir / "initramfs.img").exists()
            and (b.boot_dir / "initramfs.img").read_bytes() == initramfs,
            "service addresses held, nodes loaded and boot files on b", 60, state)
        assert all(k.poll() is None for k in keepalived.values())
        # The first boot, from A: B is stopped meanwhile, so that A answers.
        assert b.proc is not None
        os.kill(b.proc.pid, signal.SIGSTOP)
        try:
            first = {name: pxe_boot(lab, ns, udhcpc, tmp_path / f"{name}-1",
                                    prefixlen=SUBNET.prefixlen) for name, ns in nodes.items()}
            pool_first = _lease(cluster, udhcpc, pool)
            renewing, events = _start_renewer(cluster, udhcpc, renewer, tmp_path / "renewer")
        finally:
            os.kill(b.proc.pid, signal.SIGCONT)
        for boot in first.values():  # the server id is A's service address, which moves
            assert (boot.server_id, boot.next_server) == (str(SERVICE["a"]), str(a.address)), \
                boot.answers
        assert pool_first.get("serverid") == str(SERVICE["a"]), pool_first
        held = events.read()[-1][1]
        assert held.get("serverid") == str(SERVICE["a"]), held
        _kill(cluster, "a")
        killed = time.monotonic()
        moved = until(lambda: _holds(cluster, "b", SERVICE["a"]), "A's service address on B",
                      60, state)
        second = {name: pxe_boot(lab, ns, udhcpc, tmp_path / f"{name}-2",
                                 prefixlen=SUBNET.prefixlen) for name, ns in nodes.items()}
        pool_second = _lease(cluster, udhcpc, pool)
        booted = time.monotonic() - killed
        for name, boot in second.items():
            _check_outage_boot(cluster, name, first[name], boot)
        assert pool_second.get("serverid") == str(SERVICE["b"]), pool_second
        assert pool_second.get("ip") == pool_first.get("ip"), (pool_first, pool_second)
        # The running pool client renews: its RENEW goes to its server id, A's service
        # address, which B holds now; B answers from the lease A bound (read from the
        # database): the same address, never given up, and as A (the server id the client
        # chose, which B holds: udhcpc would ignore a NAK naming B). At once: a REBIND would
        # follow only after udhcpc's RENEW timeout (-T).
        renewals = [_renew(renewing, events) for _ in range(2)]
        assert [(kind, env.get("ip"), env.get("serverid")) for kind, env, _ in renewals] == \
            [("renew", held.get("ip"), str(SERVICE["a"]))] * 2, events.read()
        assert all(took < RENEW_TIMEOUT for _, _, took in renewals), renewals
        # The reports are answered before b's batch writer stores them: wait for the rows.
        want = {name: ("init", "b") for name in NODES}
        seen: dict[str, tuple[str, str]] = {}

        def shown() -> bool:
            doc = json.loads(cluster.oneroot("b", "status", "--json").stdout)
            seen.clear()
            seen.update({n["node"]: (n["stage"], n["server"]) for n in doc["nodes"]})
            return seen == want

        until(shown, "both nodes at init from b in `oneroot status`", 60, lambda: str(seen))
        print(f"\nboot outage: set-up {killed - started:.1f} s; A's address on B "
              f"{moved:.1f} s after the kill; both nodes and the pool client booted from B "
              f"{booted:.1f} s after the kill; the running pool client renewed through B "
              f"in {renewals[0][2]:.1f} s, then {renewals[1][2]:.1f} s")
        for proc in [*keepalived.values(), renewing]:
            lab.stop_process(proc)


def _check_outage_boot(cluster: ServeCluster, name: str, first: PxeBoot, boot: PxeBoot
                       ) -> None:
    a, b = cluster.servers["a"], cluster.servers["b"]
    assert boot.address == first.address == NODES[name][0]
    assert (boot.server_id, boot.next_server) == (str(SERVICE["b"]), str(b.address)), \
        boot.answers
    assert boot.script_url.startswith(f"{b.url}/boot/"), boot.script_url
    assert boot.hashes == first.hashes  # the same loader, kernel and initramfs
    # Nothing B tells the node names A's own address: it is dead.
    assert str(a.address) not in boot.text(), boot.text()
    # root= names a service address (one keepalived moves), and B holds it now: the node's
    # pinned server's, else the one of the server that answered.
    mounts = SERVICE[NODES[name][1] or "b"]
    assert {layer.server for layer in parse(boot.root).layers if isinstance(layer, NfsLayer)
            } == {str(mounts)}, boot.root
    assert _holds(cluster, "b", mounts)
