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
  binds a new address from B.

And clients that name no server (RFC 2131 §4.3.2), in a second test: a udhcpc REBINDING
(broadcast, after its unicast RENEW to A's address was lost: keepalived's gratuitous ARP
missed it) and a dhclient rebooting with A's lease (INIT-REBOOT): B ACKs the one whose lease
the database still gives it, and NAKs the one whose address the database gave away, under A's
identifier too (udhcpc takes a NAK only from A's, and B holds it now); both start over and
bind a new address; none keeps an address the database gave another client. Needs root."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
STRANGER_2 = MacAddress.parse("02:00:00:95:00:02")
DHCLIENT_CONF = "request subnet-mask, routers;\n"

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


@dataclass
class FailedOver:
    """Clients A bound (udhcpc running, dhclient killed like a node that lost power), then A
    died and B took A's service address."""

    lab: Lab
    servers: dict[str, Client]
    clients: dict[str, Client]
    running: dict[str, tuple[subprocess.Popen[bytes], UdhcpcEvents]]
    logs: list[Path]
    macs: dict[str, MacAddress] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)  # role -> the address A gave it


def _dhclient(lab: Lab, ns: Client, directory: Path) -> subprocess.Popen[bytes]:
    """dhclient in the foreground, once (no retry loop), on `directory`'s lease file: with a
    lease there it starts with INIT-REBOOT. Its hook records each reason's variables."""
    directory.mkdir(parents=True, exist_ok=True)
    hook = directory / "hook"
    if not hook.exists():
        hook.write_text('#!/bin/sh\nd="$(dirname "$0")"\necho "$reason" >> "$d/reasons"\n'
                        'env > "$d/.env" && mv "$d/.env" "$d/env.$reason"\n')
        hook.chmod(0o755)
        (directory / "conf").write_text(DHCLIENT_CONF)
    for old in directory.glob("env.*"):
        old.unlink()
    return lab.popen_in_ns(["dhclient", "-d", "-1", "-cf", str(directory / "conf"), "-sf",
                            str(hook), "-lf", str(directory / "leases"), "-pf",
                            str(directory / "pid"), ns.interface], netns=ns.netns,
                           what="dhclient", stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def _dhclient_env(directory: Path, reason: str) -> dict[str, str]:
    path = directory / f"env.{reason}"
    if not path.exists():
        return {}
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _dhclient_until(proc: subprocess.Popen[bytes], directory: Path, reasons: tuple[str, ...],
                    logs: list[Path]) -> str:
    """Wait for the first of `reasons` from a running dhclient and for its lease file to hold
    that lease (written after the script ran), kill it (SIGKILL: no RELEASE), and say which."""
    def settled() -> bool:
        envs = [_dhclient_env(directory, r) for r in reasons]
        leases = directory / "leases"
        return any(f"fixed-address {env.get('new_ip_address')};" in leases.read_text()
                   for env in envs if env and leases.exists())

    until(settled, f"dhclient {reasons}", 60,
          lambda: "\n".join(p.read_text()[-3000:] for p in logs))
    proc.kill()
    proc.wait(10)
    return next(r for r in reasons if _dhclient_env(directory, r))


@contextmanager
def _a_died(tmp_path: Path, url: str, roles: tuple[str, ...],
            dhclient_roles: tuple[str, ...] = ()) -> Iterator[FailedOver]:
    udhcpc = Udhcpc.install(tmp_path)
    logs = [tmp_path / "dhcp-a.log", tmp_path / "dhcp-b.log"]
    with Lab.create(subnet=SUBNET, state_dir=STATE_DIR, router_advertisements=False) as lab:
        servers = {name: lab.add_client(f"{HOST[name]}/{SUBNET.prefixlen}") for name in HOST}
        _ns(lab, servers["a"].netns, "ip", "addr", "add", f"{SERVICE['a']}/24", "dev", "eth0")
        _ns(lab, servers["b"].netns, "ip", "addr", "add", f"{SERVICE['b']}/24", "dev", "eth0")
        clients = {role: lab.add_client(None) for role in (*roles, *dhclient_roles)}
        with _server(lab, servers["b"], "b", url, logs[1]):
            # B's view is loaded (empty); it hears nothing while A binds the clients.
            _ns(lab, servers["b"].netns, "ip", "link", "set", "eth0", "down")
            failed = FailedOver(lab, servers, clients, {}, logs)
            with _server(lab, servers["a"], "a", url, logs[0]):
                for role in roles:
                    argv, events = udhcpc.running(clients[role].interface, tmp_path / role)
                    failed.running[role] = (lab.popen_in_ns(argv, netns=clients[role].netns,
                                                            what=role,
                                                            stdout=subprocess.DEVNULL,
                                                            stderr=subprocess.STDOUT), events)
                for role in dhclient_roles:
                    proc = _dhclient(lab, clients[role], tmp_path / role)
                    _dhclient_until(proc, tmp_path / role, ("BOUND",), logs)
                    env = _dhclient_env(tmp_path / role, "BOUND")
                    assert env["new_dhcp_server_identifier"] == str(SERVICE["a"]), env
                    failed.held[role] = env["new_ip_address"]
                for role, (_, events) in failed.running.items():
                    until(lambda ev=events: [k for k, _ in ev.read()] == ["deconfig", "bound"],
                          f"{role} bound by A", 60, lambda ev=events: str(ev.read()))
                    assert events.read()[-1][1]["serverid"] == str(SERVICE["a"])
                    failed.held[role] = events.read()[-1][1]["ip"]
            # A is dead; its service address moves to B.
            _ns(lab, servers["a"].netns, "ip", "link", "set", "eth0", "down")
            _ns(lab, servers["b"].netns, "ip", "addr", "add", f"{SERVICE['a']}/24", "dev",
                "eth0")
            _ns(lab, servers["b"].netns, "ip", "link", "set", "eth0", "up")
            failed.macs = {role: MacAddress.parse(_ns(lab, ns.netns, "cat",
                                                      "/sys/class/net/eth0/address").strip())
                           for role, ns in clients.items()}
            yield failed
            for proc, _ in failed.running.values():
                lab.stop_process(proc)


def _give_away(url: str, mac: MacAddress, address: IPv4Address, to: MacAddress) -> None:
    """The database gives `mac`'s address to another client meanwhile."""
    store = LeaseStore(url, server="c")
    store.apply(LeaseChange(action=LeaseAction.RELEASE, mac=mac, address=address))
    store.apply(LeaseChange(action=LeaseAction.BIND, mac=to, address=address,
                            expires=time.time() + 600, state=LeaseState.BOUND))
    store.close()


def test_b_answers_a_dead_peers_clients_as_the_peer(tmp_path: Path,
                                                    postgres_server: PostgresServer) -> None:
    url = postgres_server.new_schema_url()
    with _a_died(tmp_path, url, ("renew", "release", "nak")) as failed:
        lab, running, macs, held, logs = (failed.lab, failed.running, failed.macs,
                                          failed.held, failed.logs)
        for ns in failed.clients.values():  # as keepalived's gratuitous ARP would
            _ns(lab, ns.netns, "ip", "neigh", "flush", "dev", "eth0")

        proc, events = running["renew"]
        [(kind, env)] = _next_events(proc, events, signal.SIGUSR1, 1, logs)
        assert (kind, env.get("ip"), env.get("serverid")) == (
            "renew", held["renew"], str(SERVICE["a"])), events.read()

        proc, events = running["release"]
        assert str(_lease_of(url, macs["release"])) == held["release"]
        _next_events(proc, events, signal.SIGUSR2, 1, logs)  # deconfig, RELEASE sent
        until(lambda: _lease_of(url, macs["release"]) is None, "the released lease gone",
              30, lambda: logs[1].read_text()[-3000:])

        _give_away(url, macs["nak"], IPv4Address(held["nak"]), STRANGER)
        proc, events = running["nak"]
        got = _next_events(proc, events, signal.SIGUSR1, 3, logs)
        assert [kind for kind, _ in got] == ["nak", "deconfig", "bound"], got
        assert got[0][1].get("serverid") == str(SERVICE["a"])
        assert got[2][1].get("serverid") == str(SERVICE["b"])
        assert got[2][1].get("ip") not in (None, held["nak"]), got


@pytest.mark.skipif(shutil.which("dhclient") is None, reason="needs ISC dhclient")
def test_b_answers_a_dead_peers_rebinding_and_rebooting_clients(
        tmp_path: Path, postgres_server: PostgresServer) -> None:
    url = postgres_server.new_schema_url()
    with _a_died(tmp_path, url, ("rebind", "rebind-nak"), ("reboot", "reboot-nak")) as failed:
        lab, running, macs, held, logs = (failed.lab, failed.running, failed.macs,
                                          failed.held, failed.logs)
        a_mac = _ns(lab, failed.servers["a"].netns, "cat", "/sys/class/net/eth0/address")
        for role in running:  # keepalived's gratuitous ARP missed them: RENEWs to A are lost
            _ns(lab, failed.clients[role].netns, "ip", "neigh", "replace", str(SERVICE["a"]),
                "lladdr", a_mac.strip(), "dev", "eth0", "nud", "permanent")
        _give_away(url, macs["rebind-nak"], IPv4Address(held["rebind-nak"]), STRANGER)
        _give_away(url, macs["reboot-nak"], IPv4Address(held["reboot-nak"]), STRANGER_2)

        seen = {role: len(events.read()) for role, (_, events) in running.items()}
        for proc, _ in running.values():  # RENEW (lost), then REBINDING: broadcast, no 54
            os.kill(proc.pid, signal.SIGUSR1)
        rebooted = {role: _dhclient(lab, failed.clients[role], tmp_path / role)
                    for role in ("reboot", "reboot-nak")}  # INIT-REBOOT: broadcast, no 54
        assert _dhclient_until(rebooted["reboot"], tmp_path / "reboot", ("REBOOT", "EXPIRE"),
                               logs) == "REBOOT"
        assert _dhclient_env(tmp_path / "reboot", "REBOOT")["new_ip_address"] == held["reboot"]
        assert _dhclient_until(rebooted["reboot-nak"], tmp_path / "reboot-nak", ("BOUND",),
                               logs) == "BOUND"
        assert _dhclient_env(tmp_path / "reboot-nak", "EXPIRE")["old_ip_address"] == \
            held["reboot-nak"]
        rebound = _dhclient_env(tmp_path / "reboot-nak", "BOUND")
        assert rebound["new_ip_address"] != held["reboot-nak"], rebound

        for role, count in (("rebind", 1), ("rebind-nak", 3)):
            events = running[role][1]
            until(lambda ev=events, r=role, n=count: len(ev.read()) >= seen[r] + n,
                  f"{role}: {count} udhcpc event(s)", 60,
                  lambda ev=events: f"{ev.read()}\n" + logs[1].read_text()[-3000:])
        [(kind, env)] = running["rebind"][1].read()[seen["rebind"]:]
        assert (kind, env.get("ip")) == ("renew", held["rebind"]), env
        got = running["rebind-nak"][1].read()[seen["rebind-nak"]:]
        assert [kind for kind, _ in got] == ["nak", "deconfig", "bound"], got
        assert got[0][1].get("serverid") == str(SERVICE["a"])  # the NAK udhcpc takes
        assert got[2][1].get("ip") not in (None, held["rebind-nak"]), got
        # The database agrees with every client: none holds an address given to another.
        now_held = {"rebind": held["rebind"], "rebind-nak": got[2][1]["ip"],
                    "reboot": held["reboot"], "reboot-nak": rebound["new_ip_address"]}
        assert {role: str(_lease_of(url, macs[role])) for role in now_held} == now_held
