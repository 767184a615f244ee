"""The lab's network: one namespace, a bridge carrying the server's address, taps for VMs.

Owns the namespaces it creates and every process it starts in them. A state file under
`state_dir` (default /run/oneroot/lab) records the namespace names and PIDs before anything
else happens, so `Lab.cleanup_stale()` tears down what a crashed run left behind.

    with Lab.create(subnet="10.0.0.0/24") as lab:   # br0 = 10.0.0.1/24, RAs on br0
        server = lab.popen_in_ns(["oneroot", "serve", ...])
        tap = lab.add_tap()
        ...
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from oneroot.errors import ExternalToolError, LabError
from oneroot.net import MacAddress
from oneroot.netpin import run_nft
from oneroot.render.netpin import (
    GuardedPort,
    port_guard_table,
    render_bridge_guard,
    render_management_guard,
)

BRIDGE_MAC = "02:6f:6e:65:00:01"  # locally administered
MGMT_BRIDGE = "mgmt0"
MGMT_BRIDGE_MAC = "02:6f:6e:65:00:02"
log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path("/run/oneroot/lab")
NETNS_PREFIX = "oneroot-lab-"
# The ULA prefix the lab advertises. Defined here, not in oneroot.lab.ra, so that importing
# the package does not import the module `python -m oneroot.lab.ra` runs.
DEFAULT_PREFIX = ipaddress.IPv6Network("fd00:1ab::/64")


@dataclass(frozen=True, slots=True, kw_only=True)
class Tap:
    """A tap device on the lab bridge; QEMU attaches to it by name inside the namespace."""

    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Client:
    """A second namespace wired to the bridge by a veth (`eth0` inside): a test's real client."""

    netns: str
    interface: str
    address: ipaddress.IPv4Interface | None


@dataclass(slots=True, kw_only=True)
class LabProcess:
    """A process the lab started; `start_time` (from /proc) tells it from a reused PID."""

    pid: int
    start_time: int
    what: str


@dataclass(slots=True, kw_only=True)
class LabState:
    """What teardown needs, written to the state file before each resource is created."""

    name: str
    netns: str
    bridge: str
    owner_pid: int
    owner_start_time: int
    clients: list[str] = field(default_factory=list)
    taps: list[str] = field(default_factory=list)
    processes: list[LabProcess] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LabState:
        raw: dict[str, Any] = json.loads(text)
        raw["processes"] = [LabProcess(**p) for p in raw.get("processes", [])]
        return cls(**raw)


class Lab:
    """A virtual network for VMs and servers; use `Lab.create()` and `with`, or `teardown()`."""

    def __init__(self, state: LabState, *, state_file: Path,
                 server: ipaddress.IPv4Interface | None, workdir: Path,
                 own_workdir: bool) -> None:
        self.state = state
        self.state_file = state_file
        self.server = server
        self.workdir = workdir
        self._own_workdir = own_workdir
        self._popen: dict[int, subprocess.Popen[bytes]] = {}
        self._guarded: dict[str, GuardedPort] = {}
        self._torn_down = False
        self.management: ipaddress.IPv4Interface | None = None

    # -- creation -------------------------------------------------------------------------

    @classmethod
    def create(cls, *, subnet: str | ipaddress.IPv4Network = "10.0.0.0/24",
               server_address: str | ipaddress.IPv4Address | None = None,
               bridge: str = "br0", state_dir: Path = DEFAULT_STATE_DIR,
               router_advertisements: bool = True,
               ra_prefix: ipaddress.IPv6Network = DEFAULT_PREFIX,
               workdir: Path | None = None, netns_prefix: str = NETNS_PREFIX,
               address_bridge: bool = True) -> Lab:
        """A fresh namespace with `bridge` up and the server address (default: the subnet's
        first host) on it (not with `address_bridge=False`), plus the RA sender unless
        `router_advertisements` is False.

        Logs (the RA sender's, VMs' serial consoles) go to `workdir`; without one, to a
        directory next to the state file that teardown removes.
        """
        network = ipaddress.IPv4Network(subnet)
        address = (ipaddress.IPv4Address(server_address) if server_address is not None
                   else next(network.hosts()))
        if address not in network:
            raise LabError(f"server address {address} is outside {network}")
        name = f"{os.getpid()}-{secrets.token_hex(3)}"
        state = LabState(name=name, netns=netns_prefix + name, bridge=bridge,
                         owner_pid=os.getpid(), owner_start_time=_start_time(os.getpid()) or 0)
        state_dir.mkdir(parents=True, exist_ok=True)
        own_workdir = workdir is None
        workdir = workdir if workdir is not None else state_dir / name
        workdir.mkdir(parents=True, exist_ok=True)
        lab = cls(state, state_file=state_dir / f"{name}.json",
                  server=ipaddress.IPv4Interface(f"{address}/{network.prefixlen}"),
                  workdir=workdir, own_workdir=own_workdir)
        lab._save()
        try:
            lab._bring_up(ra_prefix if router_advertisements else None, address_bridge)
        except BaseException:
            lab.teardown()
            raise
        log.info("lab.up netns=%s bridge=%s server=%s", state.netns, bridge, lab.server)
        return lab

    def _bring_up(self, ra_prefix: ipaddress.IPv6Network | None, address_bridge: bool
                  ) -> None:
        ns, br = self.netns, self.bridge
        _ip("netns", "add", ns)
        # No duplicate address detection: the bridge's link-local address is usable at once,
        # so the first router advertisement leaves as soon as a VM's tap has carrier.
        self.run_in_ns(["sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0",
                        "net.ipv6.conf.default.accept_dad=0"])
        _ip("-n", ns, "link", "set", "lo", "up")
        # A fixed MAC: a bridge otherwise takes its lowest port's, and every change of its
        # address flushes its neighbour table, permanent entries included (serve's pins).
        _ip("-n", ns, "link", "add", br, "address", BRIDGE_MAC, "type", "bridge",
            "forward_delay", "0", "stp_state", "0")
        if self.server is not None and address_bridge:
            _ip("-n", ns, "addr", "add", str(self.server), "dev", br)
        _ip("-n", ns, "link", "set", br, "up")
        if ra_prefix is not None:
            self.start_router_advertisements(ra_prefix)

    # -- attributes -----------------------------------------------------------------------

    @property
    def netns(self) -> str:
        return self.state.netns

    @property
    def bridge(self) -> str:
        return self.state.bridge

    @property
    def server_address(self) -> ipaddress.IPv4Address:
        if self.server is None:
            raise LabError("this lab has no server address")
        return self.server.ip

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        if self.server is None:
            raise LabError("this lab has no server address")
        return self.server.network

    # -- devices --------------------------------------------------------------------------

    def add_tap(self, name: str | None = None) -> Tap:
        """A new tap on the bridge (NO-CARRIER until QEMU attaches to it)."""
        name = name or f"tap{len(self.state.taps)}"
        self.state.taps.append(name)
        self._save()
        _ip("-n", self.netns, "tuntap", "add", "dev", name, "mode", "tap")
        _ip("-n", self.netns, "link", "set", name, "master", self.bridge, "up")
        return Tap(name=name)

    def guard_port(self, tap: Tap, *, mac: MacAddress, address: ipaddress.IPv4Address) -> None:
        """From now on the bridge drops frames from `tap` whose source MAC is not `mac`, and
        IPv4/ARP whose source address is neither `address` nor 0.0.0.0 (libvirt's
        clean-traffic, as nftables bridge rules). Ports never guarded (the server's, a
        test client's) are not filtered. The table goes with the namespace."""
        self._guarded[tap.name] = GuardedPort(port=tap.name, mac=mac, address=address)
        run_nft(render_bridge_guard(self.bridge, list(self._guarded.values())),
                netns=self.netns)
        log.info("lab.port_guarded port=%s mac=%s address=%s", tap.name, mac, address)

    def guard_own_port(self, tap: Tap, *, mac: MacAddress,
                       address: ipaddress.IPv4Address) -> str:
        """`guard_port` for a port this process adds to a lab another process runs (`lab
        try`'s canary): the same rules in a table of the port's own, so the lab's table (which
        its supervisor renders whole) is left as it is. Returns the table, for `unguard_own`."""
        table = port_guard_table(tap.name)
        run_nft(render_bridge_guard(self.bridge, [GuardedPort(port=tap.name, mac=mac,
                                                              address=address)], table=table),
                netns=self.netns)
        log.info("lab.port_guarded port=%s mac=%s address=%s table=%s", tap.name, mac,
                 address, table)
        return table

    def unguard_own(self, table: str) -> None:
        """The table of `guard_own_port` removed (gone anyway with the namespace)."""
        run_nft(f"table bridge {table}\ndelete table bridge {table}\n", netns=self.netns)

    def add_management_network(self, server: ipaddress.IPv4Interface) -> None:
        """A second bridge, `mgmt0`, carrying `server` (the server's address on it): the
        network of the nodes' BMCs, which the nodes' bridge never reaches (nftables, and no
        forwarding in the namespace). `add_management_address` puts a BMC's address on it."""
        ns = self.netns
        _ip("-n", ns, "link", "add", MGMT_BRIDGE, "address", MGMT_BRIDGE_MAC, "type",
            "bridge", "forward_delay", "0", "stp_state", "0")
        _ip("-n", ns, "addr", "add", str(server), "dev", MGMT_BRIDGE)
        _ip("-n", ns, "link", "set", MGMT_BRIDGE, "up")
        self.run_in_ns(["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])
        run_nft(render_management_guard(MGMT_BRIDGE, server.network), netns=ns)
        self.management = server
        log.info("lab.management bridge=%s server=%s", MGMT_BRIDGE, server)

    def add_management_address(self, address: ipaddress.IPv4Address) -> None:
        """An address on the management bridge for one BMC to listen on."""
        if self.management is None or address not in self.management.network:
            raise LabError(f"{address} is not on the lab's management network",
                           hint="call add_management_network() first")
        _ip("-n", self.netns, "addr", "add", f"{address}/32", "dev", MGMT_BRIDGE)

    def add_client(self, address: str | ipaddress.IPv4Interface | None = None) -> Client:
        """A namespace of its own, `eth0` in it wired to the bridge; with `address` it is
        configured and up, without it the interface is up and unaddressed (for DHCP clients)."""
        index = len(self.state.clients)
        netns = f"{self.netns}-c{index}"
        self.state.clients.append(netns)
        self._save()
        _ip("netns", "add", netns)
        port = f"vc{index}"
        _ip("-n", self.netns, "link", "add", port, "type", "veth", "peer", "name", "eth0",
            "netns", netns)
        _ip("-n", self.netns, "link", "set", port, "master", self.bridge, "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        iface = ipaddress.IPv4Interface(address) if address is not None else None
        if iface is not None:
            _ip("-n", netns, "addr", "add", str(iface), "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        return Client(netns=netns, interface="eth0", address=iface)

    # -- processes ------------------------------------------------------------------------

    def run_in_ns(self, argv: Sequence[str], *, netns: str | None = None, check: bool = True,
                  timeout: float = 60, input: str | None = None,
                  ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the lab's namespace (or a client's) to completion."""
        cmd = ["ip", "netns", "exec", netns or self.netns, *argv]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                    input=input, check=False)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"`{' '.join(argv)}` in {netns or self.netns} took over {timeout}s"
                           ) from exc
        if check and result.returncode != 0:
            raise ExternalToolError(
                f"`{' '.join(argv)}` in {netns or self.netns} failed ({result.returncode}): "
                f"{result.stderr.strip()}")
        return result

    def popen_in_ns(self, argv: Sequence[str], *, netns: str | None = None, what: str = "",
                    **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a long-running process inside the namespace; teardown stops it.

        `ip netns exec` execs the command, so the returned PID is the command's own.
        """
        cmd = ["ip", "netns", "exec", netns or self.netns, *argv]
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc: subprocess.Popen[bytes] = subprocess.Popen(cmd, **kwargs)
        self.register_pid(proc.pid, what or os.path.basename(argv[0]))
        self._popen[proc.pid] = proc
        return proc

    def register_pid(self, pid: int, what: str) -> None:
        """Record a process for teardown (also after a crash of this Python process)."""
        self.state.processes.append(
            LabProcess(pid=pid, start_time=_start_time(pid) or 0, what=what))
        self._save()

    def stop_process(self, proc: subprocess.Popen[bytes] | int, *, timeout: float = 5) -> None:
        """SIGTERM, then SIGKILL after `timeout`; reaps it if we started it."""
        pid = proc if isinstance(proc, int) else proc.pid
        record = next((p for p in self.state.processes if p.pid == pid), None)
        terminate_process(pid, record.start_time if record else None, timeout=timeout,
                   popen=self._popen.pop(pid, None))
        self.state.processes = [p for p in self.state.processes if p.pid != pid]
        self._save()

    def start_router_advertisements(self, prefix: ipaddress.IPv6Network = DEFAULT_PREFIX,
                                    *, interval: float = 2.0) -> subprocess.Popen[bytes]:
        """Run `python -m oneroot.lab.ra` on the bridge inside the namespace."""
        with (self.workdir / "ra.log").open("ab") as log_file:
            return self.popen_in_ns(
                [sys.executable, "-m", "oneroot.lab.ra", self.bridge, "--prefix", str(prefix),
                 "--interval", str(interval)],
                what="router-advertisements", stdout=subprocess.DEVNULL, stderr=log_file)

    # -- teardown -------------------------------------------------------------------------

    def teardown(self) -> None:
        """Stop every recorded process and everything else in our namespaces, delete them
        (which removes the bridge, taps and veths), and drop the state file. Idempotent."""
        if self._torn_down:
            return
        errors = teardown_state(self.state, popen=self._popen)
        self._popen.clear()
        self._torn_down = True
        if not errors:
            self.state_file.unlink(missing_ok=True)
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            raise LabError(f"lab {self.netns} left behind: {'; '.join(errors)}",
                           hint=f"retry with Lab.cleanup_stale(); state in {self.state_file}")
        log.info("lab.down netns=%s", self.netns)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.teardown()

    @classmethod
    def cleanup_stale(cls, state_dir: Path = DEFAULT_STATE_DIR, *,
                      include_live: bool = False) -> list[str]:
        """Tear down labs whose owning process is gone (all of them with `include_live`);
        returns the namespaces removed."""
        removed: list[str] = []
        if not state_dir.is_dir():
            return removed
        for path in sorted(state_dir.glob("*.json")):
            try:
                state = LabState.from_json(path.read_text())
            except (OSError, ValueError, TypeError) as exc:
                log.warning("lab.bad_state file=%s error=%s", path, exc)
                continue
            if not include_live and _alive(state.owner_pid, state.owner_start_time):
                continue
            errors = teardown_state(state)
            if errors:
                log.warning("lab.cleanup_incomplete netns=%s errors=%s", state.netns, errors)
                continue
            path.unlink(missing_ok=True)
            shutil.rmtree(state_dir / state.name, ignore_errors=True)
            removed.append(state.netns)
        return removed

    def _save(self) -> None:
        tmp = self.state_file.with_name(f".{self.state_file.name}.tmp")
        tmp.write_text(self.state.to_json())
        tmp.replace(self.state_file)


def teardown_state(state: LabState,
                   popen: dict[int, subprocess.Popen[bytes]] | None = None) -> list[str]:
    """Undo everything `state` records; returns what could not be removed."""
    popen = popen or {}
    for proc in reversed(state.processes):
        terminate_process(proc.pid, proc.start_time, timeout=5, popen=popen.get(proc.pid))
    namespaces = [*state.clients, state.netns]
    existing = set(list_netns())
    errors: list[str] = []
    for ns in namespaces:
        if ns not in existing:
            continue
        # Anything still running in a namespace we made is ours (a server's children, say).
        for pid in _netns_pids(ns):
            terminate_process(pid, None, timeout=5, popen=None)
        try:
            _ip("netns", "del", ns)
        except ExternalToolError as exc:
            errors.append(str(exc))
    return errors


def list_netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def _netns_pids(netns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True,
                         check=False)
    return [int(tok) for tok in out.stdout.split() if tok.isdigit()]


def _ip(*args: str) -> None:
    try:
        result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise ExternalToolError("`ip` is not installed", hint="apt-get install iproute2") from exc
    if result.returncode != 0:
        raise ExternalToolError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}",
                                hint="the lab needs root (CAP_NET_ADMIN)")


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int, start_time: int | None) -> bool:
    now = _start_time(pid)
    return now is not None and (not start_time or now == start_time)


def terminate_process(pid: int, start_time: int | None, *, timeout: float,
                      popen: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, SIGKILL after `timeout`. Only the process `pid` that started at
    `start_time` (a recycled PID belongs to someone else); `popen` is reaped if given."""
    if popen is not None:
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        return
    if not _alive(pid, start_time):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid, start_time) or _is_zombie(pid):
            return
        time.sleep(0.05)
    if _alive(pid, start_time):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
