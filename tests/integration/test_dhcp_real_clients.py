"""`DhcpService` against real clients (busybox udhcpc, ISC dhclient, a crafted PXE client),
each side in its own network namespace (`oneroot.testing.netns`). Needs root."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oneroot.proto.dhcp import MessageType, OptionCode, parse_packet
from oneroot.testing.netns import Link, available, linked_namespaces

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not available(), reason="needs root and iproute2"),
]

SERVER_IP = "10.77.0.1"
NODE_MAC = "52:54:00:77:00:11"
NODE_IP = "10.77.0.11"
STRANGER_MAC = "52:54:00:77:00:99"
ROUTER = "10.77.0.254"

# The server under test: a DhcpService in its own process (so it can be killed with -9).
SERVER_MAIN = textwrap.dedent("""
    import asyncio, json, logging, sys
    from ipaddress import IPv4Address, IPv4Network
    from pathlib import Path
    from oneroot.inventory.leases import LeaseStore
    from oneroot.net import MacAddress
    from oneroot.proto.dhcp import DhcpMode, NetworkConfig, NodeBoot
    from oneroot.serve.dhcp import DhcpService

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    cfg = json.loads(sys.argv[1])
    nodes = {MacAddress.parse(n["mac"]): NodeBoot(
        name=n["name"], address=IPv4Address(n["address"]), bios_file="undionly.kpxe",
        uefi_file="ipxe.efi", ipxe_url=f"http://{cfg['server']}:8080/boot/{n['name']}.ipxe")
        for n in cfg["nodes"]}
    pool = cfg.get("pool")
    network = NetworkConfig(
        server_address=IPv4Address(cfg["server"]), subnet=IPv4Network(cfg["subnet"]),
        router=IPv4Address(cfg["router"]), dns=(IPv4Address(cfg["server"]),),
        domain="cluster.test", lease_time=600, mode=DhcpMode(cfg["mode"]),
        pool=None if pool is None else (IPv4Address(pool[0]), IPv4Address(pool[1])))
    store = LeaseStore(Path(cfg["db"]), synchronous="FULL")
    node_addresses = {n.address for n in nodes.values()}
    service = DhcpService(interface=cfg["interface"], server_address=network.server_address,
                          network=network, lookup=nodes.get, leases=store,
                          on_event=lambda e: print("EVENT", e.kind, e.node, e.peer, e.file,
                                                   flush=True),
                          is_reserved=node_addresses.__contains__)
    asyncio.run(service.run())
""")

# A crafted client: one DISCOVER (or a REQUEST to port 4011) with the given options; prints
# the replies' bytes in hex.
CLIENT_MAIN = textwrap.dedent("""
    import json, socket, sys, time
    from ipaddress import IPv4Address
    from oneroot.net import MacAddress
    from oneroot.proto.dhcp import BootOp, DhcpOptions, DhcpPacket
    cfg = json.loads(sys.argv[1])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, 25, cfg["interface"].encode())
    sock.bind(("0.0.0.0", 68))
    packet = DhcpPacket(op=BootOp.REQUEST, xid=0x5eed, chaddr=MacAddress.parse(cfg["mac"]).packed,
                        ciaddr=IPv4Address(cfg.get("ciaddr", "0.0.0.0")), flags=0x8000,
                        options=DhcpOptions((int(k), bytes.fromhex(v)) for k, v in cfg["options"]))
    sock.sendto(packet.to_bytes(), (cfg.get("to", "255.255.255.255"), cfg.get("port", 67)))
    sock.settimeout(0.2)
    deadline = time.monotonic() + cfg["wait"]
    got = 0
    while time.monotonic() < deadline:
        try:
            data, peer = sock.recvfrom(4096)
        except socket.timeout:
            continue
        print(peer[1], data.hex(), flush=True)
        got += 1
        if got == cfg["expect"]:  # then only as long as an extra reply would take to come
            deadline = min(deadline, time.monotonic() + cfg["linger"])
""")

PRINT_ENV_SCRIPT = """#!/bin/sh
# udhcpc/dhclient hook: record what the server told us, configure nothing
out="$(dirname "$0")/env.$1"
[ -n "$reason" ] && out="$(dirname "$0")/env.$reason"
env > "$out"
exit 0
"""


class Server:
    def __init__(self, link: Link, tmp: Path, *, mode: str = "full",
                 pool: tuple[str, str] | None = None, db: Path | None = None) -> None:
        self.link = link
        self.log = tmp / f"server-{time.monotonic_ns()}.log"
        config = {
            "interface": link.server.interface, "server": SERVER_IP, "subnet": "10.77.0.0/24",
            "router": ROUTER, "mode": mode, "pool": pool, "db": str(db or tmp / "leases.db"),
            "nodes": [{"mac": NODE_MAC, "name": "node01", "address": NODE_IP}],
        }
        self.log_file = self.log.open("w")
        self.proc = subprocess.Popen(
            link.server.cmd(sys.executable, "-c", SERVER_MAIN, json.dumps(config)),
            stdout=self.log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "dhcp.listen" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text()

    def kill(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log_file.close()


@pytest.fixture
def link() -> Iterator[Link]:
    with linked_namespaces(f"{SERVER_IP}/24") as made:
        made.client.set_mac(NODE_MAC)
        yield made


@pytest.fixture
def busybox(tmp_path: Path) -> Path:
    found = shutil.which("busybox")
    if found is None:
        pytest.skip("busybox not installed")
    private = tmp_path / "busybox"
    shutil.copy2(found, private)
    return private


@pytest.fixture
def hook(tmp_path: Path) -> Path:
    script = tmp_path / "hooks" / "print-env"
    script.parent.mkdir()
    script.write_text(PRINT_ENV_SCRIPT)
    script.chmod(0o755)
    return script


@pytest.fixture
def server(link: Link, tmp_path: Path) -> Iterator[Server]:
    srv = Server(link, tmp_path)
    yield srv
    srv.kill()


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def udhcpc(link: Link, busybox: Path, hook: Path, *extra: str, timeout: float = 20
           ) -> subprocess.CompletedProcess[str]:
    # -f foreground, -q quit after a lease, -n fail if none; -t/-T keep a miss short
    return link.client.ns.run(str(busybox), "udhcpc", "-f", "-q", "-n", "-t", "3", "-T", "1",
                              "-i", link.client.interface, "-s", str(hook), *extra,
                              timeout=timeout, check=False)


def crafted(link: Link, options: dict[int, bytes], *, mac: str = NODE_MAC, expect: int = 1,
            **extra: object) -> list[tuple[int, bytes]]:
    """The replies to one crafted datagram: waits up to 30 s for `expect` of them (a loaded
    machine answered later than the fixed 2 s window), then 1 s more for any extra one."""
    config = {"interface": link.client.interface, "mac": mac, "expect": expect, "wait": 30,
              "linger": 1.0, "options": [(code, value.hex()) for code, value in options.items()],
              **extra}
    result = link.client.ns.run(sys.executable, "-c", CLIENT_MAIN, json.dumps(config),
                                timeout=60)
    replies = []
    for line in result.stdout.split("\n"):
        if line.strip():
            port, data = line.split()
            replies.append((int(port), bytes.fromhex(data)))
    return replies


def test_udhcpc_known_node_gets_address_router_next_server_and_bios_file(
        link: Link, server: Server, busybox: Path, hook: Path) -> None:
    result = udhcpc(link, busybox, hook)
    assert result.returncode == 0, result.stderr
    env = read_env(hook.parent / "env.bound")
    assert env["ip"] == NODE_IP
    assert env["router"] == ROUTER
    assert env["subnet"] == "255.255.255.0"
    assert env["siaddr"] == SERVER_IP
    assert env["boot_file"] == "undionly.kpxe"
    assert env["hostname"] == "node01"
    assert env["domain"] == "cluster.test"
    assert env["serverid"] == SERVER_IP
    log = server.output()
    assert f"dhcp.offer mac={NODE_MAC} ip={NODE_IP} node=node01" in log
    assert f"dhcp.ack mac={NODE_MAC} ip={NODE_IP} node=node01" in log
    assert "EVENT dhcp.ack node01" in log


def test_udhcpc_uefi_client_gets_uefi_loader(link: Link, server: Server, busybox: Path,
                                             hook: Path) -> None:
    result = udhcpc(link, busybox, hook, "-x", "0x5d:0007", "-V", "PXEClient:Arch:00007")
    assert result.returncode == 0, result.stderr
    env = read_env(hook.parent / "env.bound")
    assert env["boot_file"] == "ipxe.efi"
    assert env["ip"] == NODE_IP


def test_udhcpc_ipxe_user_class_gets_script_url(link: Link, server: Server, busybox: Path,
                                                hook: Path) -> None:
    result = udhcpc(link, busybox, hook, "-x", "77:69505845")
    assert result.returncode == 0, result.stderr
    env = read_env(hook.parent / "env.bound")
    assert env["boot_file"] == f"http://{SERVER_IP}:8080/boot/node01.ipxe"


def test_udhcpc_unknown_mac_gets_nothing(link: Link, server: Server, busybox: Path,
                                         hook: Path) -> None:
    link.client.set_mac(STRANGER_MAC)
    started = time.monotonic()
    result = udhcpc(link, busybox, hook)
    assert result.returncode != 0
    assert time.monotonic() - started < 15
    assert not (hook.parent / "env.bound").exists()
    assert "dhcp.offer" not in server.output()


@pytest.mark.skipif(shutil.which("dhclient") is None, reason="ISC dhclient not installed")
def test_dhclient_known_node(link: Link, server: Server, hook: Path, tmp_path: Path) -> None:
    conf = tmp_path / "dhclient.conf"
    conf.write_text("request subnet-mask, routers, domain-name-servers, host-name, "
                    "domain-name;\n")
    pidfile = tmp_path / "dhclient.pid"
    result = link.client.ns.run(
        "dhclient", "-1", "-v", "-cf", str(conf), "-sf", str(hook), "-lf",
        str(tmp_path / "dhclient.leases"), "-pf", str(pidfile), link.client.interface,
        timeout=60, check=False)
    try:
        assert result.returncode == 0, result.stderr
        env = read_env(hook.parent / "env.BOUND")
        assert env["new_ip_address"] == NODE_IP
        assert env["new_routers"] == ROUTER
        assert env["new_filename"] == "undionly.kpxe"
        assert env["new_host_name"] == "node01"
        assert env["new_dhcp_server_identifier"] == SERVER_IP
        leases = (tmp_path / "dhclient.leases").read_text()
        assert f"next-server {SERVER_IP}" in leases or "next-server" not in leases
    finally:
        _stop_pidfile(pidfile)


def _stop_pidfile(pidfile: Path) -> None:
    if pidfile.exists():
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)


@pytest.mark.parametrize(("arch", "expected"), [(b"\x00\x00", "undionly.kpxe"),
                                                (b"\x00\x07", "ipxe.efi"),
                                                (b"\x00\x09", "ipxe.efi")])
def test_crafted_pxe_client_by_architecture(link: Link, server: Server, arch: bytes,
                                            expected: str) -> None:
    uuid = b"\x00" + bytes(range(16))
    replies = crafted(link, {53: b"\x01", 60: b"PXEClient:Arch:00000:UNDI:002001", 93: arch,
                             97: uuid, 55: bytes((67, 66, 60, 43, 97, 1, 3))})
    assert len(replies) == 1
    offer = parse_packet(replies[0][1])
    assert offer.message_type is MessageType.OFFER
    assert offer.file == expected.encode()
    assert str(offer.siaddr) == SERVER_IP and str(offer.yiaddr) == NODE_IP
    assert offer.options[OptionCode.VENDOR_CLASS] == b"PXEClient"
    assert offer.options[OptionCode.CLIENT_UUID] == uuid
    assert list(offer.options)[2:5] == [67, 66, 60]


def test_bad_datagrams_are_dropped_and_service_continues(link: Link, server: Server) -> None:
    link.client.ns.run(sys.executable, "-c", textwrap.dedent(f"""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.setsockopt(socket.SOL_SOCKET, 25, b"{link.client.interface}")
        for junk in (b"", b"x" * 10, b"\\x01" * 300):
            s.sendto(junk, ("255.255.255.255", 67))
    """))
    replies = crafted(link, {53: b"\x01"})
    assert len(replies) == 1
    assert "dhcp.drop" in server.output()


def test_proxy_mode_gives_boot_info_only(link: Link, tmp_path: Path, busybox: Path,
                                         hook: Path) -> None:
    srv = Server(link, tmp_path, mode="proxy")
    try:
        # a PXE ROM's DISCOVER: ProxyDHCP OFFER on 67, no address
        replies = crafted(link, {53: b"\x01", 60: b"PXEClient:Arch:00007:UNDI:003016",
                                 93: b"\x00\x07"})
        assert len(replies) == 1
        offer = parse_packet(replies[0][1])
        assert offer.message_type is MessageType.OFFER
        assert str(offer.yiaddr) == "0.0.0.0"
        assert offer.file == b"ipxe.efi" and str(offer.siaddr) == SERVER_IP
        assert OptionCode.LEASE_TIME not in offer.options
        assert OptionCode.ROUTER not in offer.options
        # after the site's DHCP server gave it an address: REQUEST to port 4011, ACK back
        link.client.add_address("10.77.0.60/24")
        replies = crafted(link, {53: b"\x03", 60: b"PXEClient:Arch:00000", 93: b"\x00\x00"},
                          ciaddr="10.77.0.60", to=SERVER_IP, port=4011)
        assert len(replies) == 1
        assert replies[0][0] == 4011
        ack = parse_packet(replies[0][1])
        assert ack.message_type is MessageType.ACK and ack.file == b"undionly.kpxe"
        # an ordinary DHCP client gets nothing from a proxy
        result = udhcpc(link, busybox, hook)
        assert result.returncode != 0
    finally:
        srv.kill()


@pytest.mark.skipif(shutil.which("dhclient") is None, reason="ISC dhclient not installed")
def test_lease_survives_kill_9(link: Link, tmp_path: Path, hook: Path, busybox: Path) -> None:
    """dhclient (unknown MAC A, discovery on) gets X; the server is killed with -9 right after
    the ACK; restarted on the same database, MAC B asking for X must get another address."""
    db = tmp_path / "durable.db"
    pool = ("10.77.0.100", "10.77.0.101")
    mac_a, mac_b = "52:54:00:77:00:aa", "52:54:00:77:00:bb"
    link.client.set_mac(mac_a)
    srv = Server(link, tmp_path, pool=pool, db=db)
    pidfile = tmp_path / "dhclient.pid"
    conf = tmp_path / "dhclient.conf"
    conf.write_text("")
    try:
        result = link.client.ns.run(
            "dhclient", "-1", "-v", "-cf", str(conf), "-sf", str(hook), "-lf",
            str(tmp_path / "a.leases"), "-pf", str(pidfile), link.client.interface,
            timeout=60, check=False)
        srv.kill(signal.SIGKILL)  # as soon as dhclient returns: it has its ACK
        assert result.returncode == 0, result.stderr
        address_a = read_env(hook.parent / "env.BOUND")["new_ip_address"]
        assert address_a in pool
    finally:
        _stop_pidfile(pidfile)
        srv.kill()
    link.client.set_mac(mac_b)
    srv = Server(link, tmp_path, pool=pool, db=db)
    try:
        result = udhcpc(link, busybox, hook, "-r", address_a)
        assert result.returncode == 0, result.stderr
        address_b = read_env(hook.parent / "env.bound")["ip"]
        assert address_b in pool and address_b != address_a
    finally:
        srv.kill()
    from oneroot.inventory.leases import LeaseStore

    store = LeaseStore(db)
    try:
        held = {str(lease.mac): str(lease.address) for lease in store.leases()}
        assert held == {mac_a: address_a, mac_b: address_b}
        assert {str(c.mac) for c in store.unknown_clients()} == {mac_a, mac_b}
    finally:
        store.close()


def test_unknown_client_seen_only_by_discover_is_written(link: Link, tmp_path: Path) -> None:
    """No reply waits for an unknown client's record, so it rides with the next lease write;
    a client that only ever sends DISCOVER is written by the flush timer (~1 s)."""
    from oneroot.inventory.leases import LeaseStore

    db = tmp_path / "lazy.db"
    srv = Server(link, tmp_path, pool=("10.77.0.100", "10.77.0.120"), db=db)
    try:
        # the first datagram after start also stages the retention pass, which is written
        # at once: only a later client's record depends on the timer
        crafted(link, {53: b"\x01"}, mac="52:54:00:77:00:98")
        replies = crafted(link, {53: b"\x01"}, mac=STRANGER_MAC)
        assert [parse_packet(data).message_type for _, data in replies] == [MessageType.OFFER]
        deadline = time.monotonic() + 30  # a bound: the timer's write, on a loaded machine
        seen: set[str] = set()
        while time.monotonic() < deadline and STRANGER_MAC not in seen:
            store = LeaseStore(db)  # another process's view: only what was written
            try:
                seen = {str(client.mac) for client in store.unknown_clients()}
            finally:
                store.close()
            time.sleep(0.2)
        assert STRANGER_MAC in seen
        assert srv.proc.poll() is None
    finally:
        srv.kill()
