"""`lab try` on a real network (issue 14): the canary's private namespace and its guarded
uplink, with the real kernel, nftables, busybox udhcpc/wget/ping/arping.

A stand-in for a real cluster: a namespace `server` whose `br0` carries the server's address
and routes (`ip_forward=1`, as many cluster heads), and `other`, a host on that segment that
sniffs every frame naming the canary's MAC or address. The canary (a namespace on the private
bridge, standing for the VM) gets its address by DHCP, reaches the server's HTTP port, and
nothing else: not another port, not the other host (ARP, routed IP, DHCP). Needs root."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from oneroot.initramfs.busybox import fetch_busybox
from oneroot.lab import Lab
from oneroot.lab.canary_dhcp import canary_answer_doc
from oneroot.lab.canarynet import TRY_NETNS_PREFIX, CanaryNet, clean_stale, find_segment
from oneroot.lab.netns import Client, Tap, list_netns
from oneroot.net import MacAddress
from oneroot.proto.dhcp import NetworkConfig, NodeBoot
from oneroot.testing.cache import suite_cache_dir
from oneroot.testing.canary import leftovers, processes_naming
from oneroot.testing.wait import until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None,
                       reason="needs root (namespaces, nftables)"),
]

SERVER, OTHER, CANARY = "10.95.0.1", "10.95.0.50", "10.95.0.200"
MAC = MacAddress.parse("52:54:00:95:00:c8")
HTTP, NOT_A_SERVICE = 18080, 2222


@dataclass
class World:
    real: Lab  # the server's namespace; br0 is its real interface
    other: Client
    net: CanaryNet
    canary: Client
    seen: Path  # the other host's sniffer's output
    busybox: str

    def on_canary(self, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return self.real.run_in_ns([self.busybox, *argv], netns=self.canary.netns,
                                   check=False, timeout=timeout)

    def leaks(self) -> list[str]:
        return [ln for ln in self.seen.read_text().splitlines() if ln.startswith("frame")]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    busybox = str(fetch_busybox(cache_dir=suite_cache_dir()).path)
    with Lab.create(subnet="10.95.0.0/24", router_advertisements=False,
                    state_dir=tmp_path / "state") as real:
        real.run_in_ns(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        other = real.add_client(f"{OTHER}/24")
        seen = tmp_path / "seen"
        real.popen_in_ns([sys.executable, "-m", "oneroot.testing.sniff", "eth0", str(seen),
                          "--mac", str(MAC), "--ip", CANARY], netns=other.netns,
                         what="sniffer")
        until(lambda: seen.exists() and "ready" in seen.read_text(), "the sniffer", 30,
              lambda: "no ready line")
        for port in (HTTP, NOT_A_SERVICE):
            real.popen_in_ns([busybox, "nc", "-ll", "-p", str(port), "-e", "/bin/echo", "hi"],
                             what=f"listener {port}", stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        segment = find_segment("br0", ipaddress.IPv4Address(SERVER), netns=real.netns,
                               http_port=HTTP)
        assert segment is not None and str(segment.address) == f"{SERVER}/24"
        (tmp_path / "try").mkdir()
        net = CanaryNet.create(segment, canary=ipaddress.IPv4Address(CANARY), mac=MAC,
                               workdir=tmp_path / "try", state_dir=tmp_path / "try-state")
        with net:
            net.answer_dhcp(canary_answer_doc(MAC, NetworkConfig(
                server_address=ipaddress.IPv4Address(SERVER),
                subnet=ipaddress.IPv4Network("10.95.0.0/24")), NodeBoot(
                name="try-node01", address=ipaddress.IPv4Address(CANARY),
                bios_file="undionly.kpxe", uefi_file="ipxe.efi", ipxe_url="http://x/")))
            canary = net.lab.add_client()  # the VM's stand-in, on port vc0 of the bridge
            for args in (["down"], ["address", str(MAC)], ["up"]):
                real.run_in_ns(["ip", "link", "set", "eth0", *args], netns=canary.netns)
            net.lab.guard_port(Tap(name="vc0"), mac=MAC, address=ipaddress.IPv4Address(CANARY))
            yield World(real=real, other=other, net=net, canary=canary, seen=seen,
                        busybox=busybox)


def _drops(lab: Lab, family: str, table: str, *, netns: str | None = None) -> int:
    """Packets the drop rules of `table` counted."""
    rules = lab.run_in_ns(["nft", "list", "table", family, table], netns=netns).stdout
    return sum(int(n) for n in re.findall(r"counter packets (\d+) bytes \d+ drop", rules))


def _dhcp(w: World) -> None:
    done = w.on_canary("udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-T", "1", "-s",
                       "/bin/true", "-V", "oneroot", timeout=30)
    assert f"lease of {CANARY} obtained from" in done.stderr + done.stdout, done
    w.on_canary("ip", "addr", "add", f"{CANARY}/24", "dev", "eth0")


def _connects(w: World, port: int) -> bool:
    done = w.on_canary("nc", "-w", "3", SERVER, str(port), timeout=10)
    return "hi" in done.stdout


def _reaches_other(w: World) -> bool:
    """Through the server as a router (a host route via it): the other host answers?"""
    w.on_canary("ip", "route", "replace", f"{OTHER}/32", "via", SERVER, "dev", "eth0")
    return w.on_canary("ping", "-c", "2", "-W", "2", OTHER).returncode == 0


def test_the_canary_reaches_the_servers_services_and_nothing_else(world: World) -> None:
    w = world
    _dhcp(w)  # answered in the private namespace, by serve's responder
    assert _connects(w, HTTP)  # the canary's own traffic to a service of the server
    assert not _connects(w, NOT_A_SERVICE)
    arp = w.on_canary("arping", "-c", "2", "-w", "3", "-I", "eth0", OTHER)
    assert "Received 0 response" in arp.stdout, arp
    assert not _reaches_other(w)
    assert w.on_canary("ping", "-c", "1", "-W", "2", SERVER).returncode == 0
    # The other host saw nothing of the canary: no DHCP, no ARP, no routed packet.
    time.sleep(0.5)  # frames in flight reach the sniffer's file (it flushes each line)
    assert w.leaks() == []
    rules = w.real.run_in_ns(["nft", "list", "ruleset"]).stdout
    dropped = re.findall(r"counter packets (\d+) bytes \d+ (?:drop|comment)", rules)
    assert sum(int(n) for n in dropped) > 0, rules


def test_the_witness_sees_a_canary_without_its_guard(world: World) -> None:
    """The control: with the uplink's tables gone and forwarding on, the same canary's ping
    reaches the other host (whose answer finds no way back: it asks the real segment for the
    canary's address), and the sniffer says so: the test above can fail."""
    w = world
    _dhcp(w)
    up = w.net.uplink
    w.real.run_in_ns(["nft", "delete", "table", "inet", f"oneroot_try_{up}"])
    w.real.run_in_ns(["sysctl", "-q", "-w", f"net.ipv4.conf.{up}.forwarding=1"])
    _reaches_other(w)
    until(lambda: bool(w.leaks()), "a leak seen", 10, lambda: "nothing seen")


def test_everything_is_removed_and_a_stale_one_is_cleaned(tmp_path: Path) -> None:
    with Lab.create(subnet="10.96.0.0/24", router_advertisements=False,
                    state_dir=tmp_path / "state") as real:
        segment = find_segment("br0", ipaddress.IPv4Address("10.96.0.1"), netns=real.netns)
        assert segment is not None
        assert find_segment("br0", ipaddress.IPv4Address("10.96.0.2"), netns=real.netns) is None
        assert find_segment("nope0", ipaddress.IPv4Address("10.96.0.1"),
                            netns=real.netns) is None
        (tmp_path / "try").mkdir()
        net = CanaryNet.create(segment, canary=ipaddress.IPv4Address("10.96.0.200"), mac=MAC,
                               workdir=tmp_path / "try", state_dir=tmp_path / "try-state")
        with net:
            assert net.lab.netns in list_netns()
            assert "10.96.0.200 dev" in real.run_in_ns(["ip", "route"]).stdout
        assert net.lab.netns not in list_netns()
        assert "10.96.0.200" not in real.run_in_ns(["ip", "route"]).stdout
        assert "oneroot_try" not in real.run_in_ns(["nft", "list", "tables"]).stdout
        # A lab try killed: its tables stay behind until the next one cleans them.
        stale = CanaryNet.create(segment, canary=ipaddress.IPv4Address("10.96.0.201"),
                                 mac=MAC, workdir=tmp_path / "try",
                                 state_dir=tmp_path / "try-state")
        subprocess.run(["ip", "netns", "del", stale.lab.netns], check=True)
        until(lambda: stale.uplink not in real.run_in_ns(["ip", "link"]).stdout,
              "the kernel's removal of the veth pair", 30, lambda: "still there")
        assert "oneroot_try" in real.run_in_ns(["nft", "list", "tables"]).stdout
        removed = clean_stale(real.netns, tmp_path / "try-state")
        assert f"inet oneroot_try_{stale.uplink}" in removed
        assert "oneroot_try" not in real.run_in_ns(["nft", "list", "tables"]).stdout


LEFT_BEHIND = """import ipaddress, os, sys
from pathlib import Path
from oneroot.lab.canary_dhcp import canary_answer_doc
from oneroot.lab.canarynet import CanaryNet, find_segment
from oneroot.net import MacAddress
from oneroot.proto.dhcp import NetworkConfig, NodeBoot
server, canary, mac, tmp = sys.argv[1:]
segment = find_segment("br0", ipaddress.IPv4Address(server))
net = CanaryNet.create(segment, canary=ipaddress.IPv4Address(canary), mac=MacAddress.parse(mac),
                       workdir=Path(tmp, "try"), state_dir=Path(tmp, "try-state"))
net.answer_dhcp(canary_answer_doc(MacAddress.parse(mac), NetworkConfig(
    server_address=ipaddress.IPv4Address(server),
    subnet=ipaddress.IPv4Network(server + "/24", strict=False)), NodeBoot(
    name="try-node01", address=ipaddress.IPv4Address(canary), bios_file="undionly.kpxe",
    uefi_file="ipxe.efi", ipxe_url="http://x/")))
print(net.lab.netns, flush=True)
os._exit(0)  # no teardown: a lab try killed
"""


def test_a_canary_left_by_a_try_under_ip_netns_exec_is_seen_from_outside(tmp_path: Path
                                                                           ) -> None:
    """`lab run` runs lab try under `ip netns exec` (a mount namespace of its own, gone with
    it): a private namespace it leaves is still named outside (its file in /run/netns), and
    `leftovers` also sees its state file and its DHCP responder; once the name alone is gone,
    the names no longer show the namespace its process keeps alive, `leftovers` still does."""
    with Lab.create(subnet="10.96.0.0/24", router_advertisements=False,
                    state_dir=tmp_path / "state") as real:
        (tmp_path / "try").mkdir()
        done = real.run_in_ns([sys.executable, "-c", LEFT_BEHIND, "10.96.0.1", "10.96.0.202",
                               str(MAC), str(tmp_path)], timeout=60)
        left = done.stdout.strip()
        state = tmp_path / "try-state"
        try:
            assert left.startswith(TRY_NETNS_PREFIX) and left in list_netns()
            found = leftovers(str(MAC), state_dir=state)
            name = left.removeprefix(TRY_NETNS_PREFIX)
            assert f"namespace {left}" in found and f"state file {state / name}.json" in found
            assert any("python" in f for f in found if f.startswith("process")), found
            subprocess.run(["ip", "netns", "del", left], check=False, capture_output=True)
            assert left not in list_netns()  # the names say nothing is left ...
            assert processes_naming(str(MAC))  # ... while its DHCP responder runs on
            assert leftovers(str(MAC), state_dir=state)
        finally:
            for pid in (p.split(":")[0] for p in processes_naming(str(MAC))):
                os.kill(int(pid), signal.SIGKILL)  # the responder this test started
            clean_stale(real.netns, state)
        assert leftovers(str(MAC), state_dir=state) == []


TFTP_SERVER = """import asyncio, ipaddress, sys
from pathlib import Path
from oneroot.serve.tftp import TftpService
async def main() -> None:
    service = TftpService(bind=sys.argv[1], port=69, root=Path(sys.argv[2]),
                          on_event=lambda e: None)
    await service.start()
    print("ready", flush=True)
    await service.run()
asyncio.run(main())
"""
RENEW_SCRIPT = """#!/bin/sh
echo "$1 $ip $serverid" >> "$(dirname "$0")/events"
case "$1" in bound|renew) ip addr replace "$ip/$mask" dev "$interface" ;; esac
"""


def test_tftp_and_a_dhcp_renewal_work_through_the_guard(world: World, tmp_path: Path) -> None:
    """What a canary booting by PXE and running long needs beyond HTTP/NFS: its loader by
    TFTP from the server (serve's own TFTP service, replying from a port of its own, with
    tftp-hpa and atftp) and a lease renewal (udhcpc's unicast REQUEST to the server id, at
    T1 or on SIGUSR1), answered at once in the private namespace, DHCP never crossing the
    uplink (the server's guard drops nothing meanwhile; the private fence dropped the
    responder's broadcasts there); another port and another host stay unreachable."""
    w = world
    dropped = _drops(w.real, "inet", f"oneroot_try_{w.net.uplink}")
    boot = tmp_path / "boot"
    boot.mkdir()
    loader = os.urandom(200_000)  # several hundred blocks: data from serve's own port
    (boot / "undionly.kpxe").write_bytes(loader)
    log = tmp_path / "tftp.log"
    with log.open("wb") as out:
        w.real.popen_in_ns([sys.executable, "-c", TFTP_SERVER, SERVER, str(boot)],
                           what="tftp", stdout=out, stderr=subprocess.STDOUT)
    until(lambda: "ready" in log.read_text(), "the TFTP service", 30, log.read_text)
    script = tmp_path / "dhcp" / "script"
    script.parent.mkdir()
    script.write_text(RENEW_SCRIPT)
    script.chmod(0o755)
    events = script.parent / "events"
    udhcpc = w.real.popen_in_ns([w.busybox, "udhcpc", "-f", "-i", "eth0", "-t", "5", "-T", "2",
                                 "-s", str(script)], netns=w.canary.netns, what="udhcpc",
                                stdout=subprocess.DEVNULL,
                                stderr=(tmp_path / "udhcpc.log").open("wb"))
    until(lambda: events.exists() and f"bound {CANARY}" in events.read_text(), "a lease", 30,
          lambda: (tmp_path / "udhcpc.log").read_text())
    got = tmp_path / "got"
    for argv in (["tftp", SERVER, "-m", "binary", "-c", "get", "undionly.kpxe", str(got)],
                 ["atftp", "--get", "-r", "undionly.kpxe", "-l", str(got), SERVER]):
        got.unlink(missing_ok=True)
        done = w.real.run_in_ns(argv, netns=w.canary.netns, check=False, timeout=60)
        assert got.exists() and got.read_bytes() == loader, (argv, done)
    # A renewal now (as at T1): the unicast REQUEST to the server id is answered at once,
    # without falling back to a broadcast REBIND
    os.kill(udhcpc.pid, signal.SIGUSR1)
    until(lambda: f"renew {CANARY} {SERVER}" in events.read_text(), "the renewal", 20,
          lambda: events.read_text() + (tmp_path / "udhcpc.log").read_text())
    assert "broadcasting renew" not in (tmp_path / "udhcpc.log").read_text()
    assert _drops(w.real, "inet", f"oneroot_try_{w.net.uplink}") == dropped
    assert _drops(w.net.lab, "bridge", "oneroot_try_fence", netns=w.net.lab.netns) > 0
    assert not _connects(w, NOT_A_SERVICE) and not _reaches_other(w)
    tftp_other = w.real.run_in_ns(["timeout", "5", "tftp", OTHER, "-c", "get",
                                   "undionly.kpxe", str(got)], netns=w.canary.netns,
                                  check=False, timeout=30)
    assert tftp_other.returncode != 0
    time.sleep(0.5)  # frames in flight reach the sniffer's file
    assert w.leaks() == []
