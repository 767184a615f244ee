"""A server that took over a dead peer's service address answers that peer's running pool
clients as the peer (issue 16, `ha_servers`), with real busybox udhcpc clients: two
`DhcpService`s on one PostgreSQL, each in a namespace of its own on a bridge, the clients in
theirs. B's view never saw the leases A bound (B's link was down meanwhile); A dies and its
service address moves to B (as keepalived would move it; the clients' ARP entries for it are
flushed, as its gratuitous ARP would update them). Then:

- a RENEW (unicast to A's service address) is ACKed naming A's address: the same address;
- a RELEASE (udhcpc SIGUSR2, unicast to A's address) frees the lease in the database, though
  B's view lacked it (it reads the row first);
- a RENEW of an address the database gives another client now is NAKed naming A's address,
  which udhcpc takes (it ignores a NAK from a server id it did not choose): it starts over and
  binds a new address from B. Needs root."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from oneroot.inventory.leases import LeaseStore
from oneroot.lab import Lab
from oneroot.lab.netns import Client
from oneroot.net import MacAddress
from oneroot.proto.dhcp import LeaseAction, LeaseChange, LeaseState
from oneroot.testing.dhcpclient import Udhcpc, UdhcpcEvents
from oneroot.testing.netns import STATE_DIR, available
from oneroot.testing.postgres import PostgresServer
from oneroot.testing.wait import until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not available(), reason="needs root and iproute2"),
]

SUBNET = IPv4Network("10.95.0.0/24")
HOST = {"a": IPv4Address("10.95.0.2"), "b": IPv4Address("10.95.0.3")}
SERVICE = {"a": IPv4Address("10.95.0.102"), "b": IPv4Address("10.95.0.103")}
POOL = ("10.95.0.150", "10.95.0.199")
STRANGER = MacAddress.parse("02:00:00:95:00:01")  # the client the database moves an address to

SERVER_MAIN = textwrap.dedent("""
    import asyncio, json, logging, sys
    from ipaddress import IPv4Address, IPv4Network
    from oneroot.inventory.leases import LeaseStore
    from oneroot.proto.dhcp import NetworkConfig
    from oneroot.serve.dhcp import DhcpService

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    cfg = json.loads(sys.argv[1])
    network = NetworkConfig(
        server_address=IPv4Address(cfg["host"]), server_id=IPv4Address(cfg["service"]),
        peers=tuple(IPv4Address(p) for p in cfg["peers"]), subnet=IPv4Network(cfg["subnet"]),
        lease_time=600, pool=(IPv4Address(cfg["pool"][0]), IPv4Address(cfg["pool"][1])))
    store = LeaseStore(cfg["db"], server=cfg["name"])
    service = DhcpService(interface="eth0", server_address=network.server_address,
                          network=network, lookup=lambda mac: None, leases=store,
                          on_event=lambda e: None)
    asyncio.run(service.run())
""")


def _ns(lab: Lab, netns: str, *argv: str) -> str:
    return lab.run_in_ns(list(argv), netns=netns).stdout


@contextmanager
def _server(lab: Lab, ns: Client, name: str, db: str, log: Path
            ) -> Iterator[subprocess.Popen[bytes]]:
    config = {"host": str(HOST[name]), "service": str(SERVICE[name]), "name": name,
              "peers": [str(s) for n, s in SERVICE.items() if n != name],
              "subnet": str(SUBNET), "pool": POOL, "db": db}
    with log.open("ab") as out:
        proc = lab.popen_in_ns([sys.executable, "-c", SERVER_MAIN, json.dumps(config)],
                               netns=ns.netns, what=f"dhcp {name}", stdout=out,
                               stderr=subprocess.STDOUT)
    until(lambda: "dhcp.listen" in log.read_text() or proc.poll() is not None,
          f"server {name} listening", 60, log.read_text)
    assert proc.poll() is None, log.read_text()
    try:
        yield proc
    finally:
        lab.stop_process(proc)


def _next_events(proc: subprocess.Popen[bytes], events: UdhcpcEvents, sig: int, count: int,
                 logs: list[Path]) -> list[tuple[str, dict[str, str]]]:
    """Send udhcpc `sig`; its next `count` script events."""
    seen = len(events.read())
    os.kill(proc.pid, sig)
    until(lambda: len(events.read()) >= seen + count, f"{count} udhcpc event(s)", 60,
          lambda: f"{events.read()}\n" + "\n".join(p.read_text()[-3000:] for p in logs))
    return events.read()[seen:seen + count]


def _lease_of(url: str, mac: MacAddress) -> IPv4Address | None:
    store = LeaseStore(url)
    try:
        lease = store.lease_for_mac(mac)
    finally:
        store.close()
    return None if lease is None else lease.address


def test_b_answers_a_dead_peers_clients_as_the_peer(tmp_path: Path,
                                                    postgres_server: PostgresServer) -> None:
    url = postgres_server.new_schema_url()
    udhcpc = Udhcpc.install(tmp_path)
    logs = [tmp_path / "dhcp-a.log", tmp_path / "dhcp-b.log"]
    with Lab.create(subnet=SUBNET, state_dir=STATE_DIR, router_advertisements=False) as lab:
        servers = {name: lab.add_client(f"{HOST[name]}/{SUBNET.prefixlen}") for name in HOST}
        _ns(lab, servers["a"].netns, "ip", "addr", "add", f"{SERVICE['a']}/24", "dev", "eth0")
        _ns(lab, servers["b"].netns, "ip", "addr", "add", f"{SERVICE['b']}/24", "dev", "eth0")
        clients = {role: lab.add_client(None) for role in ("renew", "release", "nak")}
        with _server(lab, servers["b"], "b", url, logs[1]) as _b:
            # B's view is loaded (empty); it hears nothing while A binds the clients.
            _ns(lab, servers["b"].netns, "ip", "link", "set", "eth0", "down")
            running = {}
            with _server(lab, servers["a"], "a", url, logs[0]):
                for role, ns in clients.items():
                    argv, events = udhcpc.running(ns.interface, tmp_path / role)
                    running[role] = (lab.popen_in_ns(argv, netns=ns.netns, what=role,
                                                     stdout=subprocess.DEVNULL,
                                                     stderr=subprocess.STDOUT), events)
                for role, (_, events) in running.items():
                    until(lambda ev=events: [k for k, _ in ev.read()] == ["deconfig", "bound"],
                          f"{role} bound by A", 60, lambda ev=events: str(ev.read()))
                    assert events.read()[-1][1]["serverid"] == str(SERVICE["a"])
            # A is dead; its service address moves to B.
            _ns(lab, servers["a"].netns, "ip", "link", "set", "eth0", "down")
            _ns(lab, servers["b"].netns, "ip", "addr", "add", f"{SERVICE['a']}/24", "dev",
                "eth0")
            _ns(lab, servers["b"].netns, "ip", "link", "set", "eth0", "up")
            for ns in clients.values():
                _ns(lab, ns.netns, "ip", "neigh", "flush", "dev", "eth0")
            macs = {role: MacAddress.parse(_ns(lab, ns.netns, "cat",
                                               "/sys/class/net/eth0/address").strip())
                    for role, ns in clients.items()}
            held = {role: events.read()[-1][1]["ip"] for role, (_, events) in running.items()}

            proc, events = running["renew"]
            [(kind, env)] = _next_events(proc, events, signal.SIGUSR1, 1, logs)
            assert (kind, env.get("ip"), env.get("serverid")) == (
                "renew", held["renew"], str(SERVICE["a"])), events.read()

            proc, events = running["release"]
            assert str(_lease_of(url, macs["release"])) == held["release"]
            _next_events(proc, events, signal.SIGUSR2, 1, logs)  # deconfig, RELEASE sent
            until(lambda: _lease_of(url, macs["release"]) is None, "the released lease gone",
                  30, lambda: logs[1].read_text()[-3000:])

            # The database gives the nak client's address to another client meanwhile.
            store = LeaseStore(url, server="c")
            address = IPv4Address(held["nak"])
            store.apply(LeaseChange(action=LeaseAction.RELEASE, mac=macs["nak"],
                                    address=address))
            store.apply(LeaseChange(action=LeaseAction.BIND, mac=STRANGER, address=address,
                                    expires=time.time() + 600, state=LeaseState.BOUND))
            store.close()
            proc, events = running["nak"]
            got = _next_events(proc, events, signal.SIGUSR1, 3, logs)
            assert [kind for kind, _ in got] == ["nak", "deconfig", "bound"], got
            assert got[0][1].get("serverid") == str(SERVICE["a"])
            assert got[2][1].get("serverid") == str(SERVICE["b"])
            assert got[2][1].get("ip") not in (None, held["nak"]), got
            for proc, _ in running.values():
                lab.stop_process(proc)
