"""`oneroot lab try NODE`: a canary VM that boots exactly NODE's configuration (its kernel,
initramfs, kernel arguments, runlevel and layers, on the image version asked for) without
touching NODE, on a running lab's network, or, where the server's network is real, in a
private namespace that mirrors it (`lab.canarynet`; `canary_network` says which).

How the canary stays apart from NODE:
- it has its own MAC and address, and its own entry in the inventory (`try-NODE`, NODE's
  groups, the version tried, ephemeral), so `oneroot serve` answers its DHCP, takes its stage
  reports, and exports the version and the group layers to it;
- NODE's own layer is read through a temporary read-only export to the canary's address (the
  record of `ops.canary`), under a throwaway tmpfs top: nothing the canary writes reaches it;
  for a `union=server` node, whose upper the server's union writes, a snapshot of that upper
  (`overlay.snapshot`) in the canary's own directory, which is exported read-only to the
  canary's address as any ephemeral node's: the canary unions NODE's layers in its own
  initramfs (`union=client`), with the snapshot in the place of NODE's layer;
- it boots NODE's kernel and initramfs directly (QEMU `-kernel`), with NODE's command line
  whose `root=` has NODE's layer read-only under a tmpfs.
Everything is removed afterwards (also on failure or Ctrl-C): the VM, its tap, the inventory
entry, the record (so the export) and the canary's directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from oneroot.errors import ExternalToolError, InvalidValue, LabError
from oneroot.fsutil import remove_tree
from oneroot.inventory.store import InventoryStore
from oneroot.lab.canary_dhcp import canary_answer_doc
from oneroot.lab.canarynet import CanaryNet, ServerSegment, find_segment
from oneroot.lab.canarynet import clean_stale as clean_stale_networks
from oneroot.lab.netns import Lab, LabState, Tap
from oneroot.lab.qemu import BOOT_FAILURES, QemuVm, random_mac
from oneroot.model import NfsServerKind
from oneroot.model.checks import CHECK_KEYS, Check, CheckResult
from oneroot.model.inventory import Inventory
from oneroot.model.paths import Paths
from oneroot.model.profile import ProfileValue, UnionMode
from oneroot.model.resolved import resolve_cluster
from oneroot.net import MacAddress
from oneroot.nfs.ganesha import running_pid
from oneroot.nfs.knfsd import EXPORTS_FILE
from oneroot.ops import inventory as inv_ops
from oneroot.ops.canary import (
    CANARY_PREFIX,
    canary_dir,
    canary_name,
    read_canaries,
    record_canary,
    remove_record,
)
from oneroot.ops.catalog import BootCatalog, network_config
from oneroot.ops.image_versions import resolve_version
from oneroot.ops.labcontrol import read_control, supervisor_alive
from oneroot.ops.nfs_serving import ganesha_files
from oneroot.ops.nodes_fs import node_layer
from oneroot.ops.runlevel_watch import RUNLEVEL, check_results, observed
from oneroot.ops.server_union import union_ns_pid
from oneroot.overlay.snapshot import DEFAULT_COPY_LIMIT, snapshot_tree
from oneroot.render.boot import render_cmdline
from oneroot.rootspec import Mode, NfsLayer, RootSpec, TmpfsLayer, format_spec, parse

Progress = Callable[[str], None]
DEFAULT_TIMEOUT = 600.0
EXPORT_TIMEOUT = 60.0
POLL = 0.5
CANARY_MEMORY_MIB = 768
# Seconds after `runlevel` a missing check result is waited for. The node reports every check
# before `runlevel`, so a missing one is a node that skipped it (an old report script).
CHECK_GRACE = 15.0
CHECKS = "checks"  # the stage a try fails at when the runlevel was reached but a check failed
# A canary never gets these from NODE: they name NODE's own hardware.
NODE_ONLY_KEYS = ("bmc_address",)
SNAPSHOT_DIR = "snapshot"  # in the canary's own directory: a union=server NODE's upper, copied


@dataclass(frozen=True, slots=True, kw_only=True)
class TryPlan:
    """What the canary boots: NODE's boot files and command line, on `image`."""

    node: str
    canary: str
    image: str  # NAME@N
    address: ipaddress.IPv4Address
    mac: MacAddress
    kernel: Path
    initramfs: Path
    cmdline: str
    runlevel: str
    groups: tuple[str, ...]
    checks: tuple[Check, ...] = ()
    # NODE's own check values (and --set's): the canary's entry gets them, so the server
    # gives the canary exactly NODE's checks (its groups give the rest).
    check_overrides: dict[str, ProfileValue] = field(default_factory=dict)
    # A union=server NODE: its upper (read, never written), and where the canary reads a
    # snapshot of it (inside the canary's own directory, exported read-only to the canary).
    snapshot_of: Path | None = None
    snapshot: Path | None = None

    @property
    def exported_by(self) -> str:
        """The node whose export gives the canary NODE's layer: NODE's own (the canary a
        reader of it), or the canary's (the snapshot)."""
        return self.node if self.snapshot is None else self.canary


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckOutcome:
    check: Check
    result: CheckResult | None  # None: the canary reported nothing for it

    @property
    def passed(self) -> bool:
        return self.result is not None and self.result.passed

    def as_json(self) -> dict[str, object]:
        return {"kind": str(self.check.kind), "target": self.check.target,
                "result": self.verdict,
                "message": self.result.message if self.result else ""}

    @property
    def verdict(self) -> str:
        return "no result" if self.result is None else "pass" if self.passed else "fail"


@dataclass(slots=True, kw_only=True)
class TryResult:
    node: str
    canary: str
    image: str
    address: str
    mac: str = ""
    network: str = "lab"  # "lab": on the lab's bridge; "private": a real network's mirror
    passed: bool = False
    stage: str = "-"  # the last stage the canary reported
    reason: str = ""
    stages: list[tuple[str, float]] = field(default_factory=list)  # (stage, s since start)
    checks: list[CheckOutcome] = field(default_factory=list)
    seconds: float = 0.0
    serial_log: str = ""

    def as_json(self) -> dict[str, object]:
        doc = dataclasses.asdict(self)
        doc["stages"] = [{"stage": s, "seconds": round(t, 1)} for s, t in self.stages]
        doc["checks"] = [c.as_json() for c in self.checks]
        doc["seconds"] = round(self.seconds, 1)
        return doc


# -- the plan (no side effects) ---------------------------------------------------------------

def canary_address(inv: Inventory, *, seen: Iterable[ipaddress.IPv4Address] = ()
                   ) -> ipaddress.IPv4Address:
    """The highest address of the subnet that no node, server, gateway, DNS server or pool
    holds, nor a host `seen` on the segment."""
    s = inv.settings
    taken = {n.address for n in inv.nodes.values()} | {s.server_address, *s.dns, *seen}
    taken |= {a for h in s.ha_servers for a in (h.host, h.service)}
    if s.gateway is not None:
        taken.add(s.gateway)
    pool = (s.pool_start, s.pool_end)
    for address in reversed(list(s.subnet.hosts())):
        in_pool = pool[0] is not None and pool[1] is not None and pool[0] <= address <= pool[1]
        if address not in taken and not in_pool:
            return address
    raise InvalidValue(f"the subnet {s.subnet} has no free address for a canary",
                       hint="remove a node or widen the subnet")


def canary_root(spec: RootSpec, own: NfsLayer, *, read_from: PurePosixPath | None = None
                ) -> RootSpec:
    """NODE's layers with its own layer read-only under a tmpfs (as an ephemeral node's);
    `read_from`: read that directory in its place (a snapshot of it)."""
    layers: list[NfsLayer | TmpfsLayer] = []
    for layer in spec.layers:
        if isinstance(layer, NfsLayer) and layer.path == own.path:
            layers.append(dataclasses.replace(layer, mode=Mode.RO, path=read_from or
                                              layer.path))
        elif not isinstance(layer, TmpfsLayer):
            layers.append(layer)
    return RootSpec(layers=(*layers, TmpfsLayer()))


def plan_try(inv: Inventory, node: str, *, image: str | None = None,
             sets: dict[str, ProfileValue] | None = None,
             address: ipaddress.IPv4Address | None = None) -> TryPlan:
    """NODE's boot (with `sets` and the image version `image`, default NODE's) for a canary."""
    n = inv_ops.get_node(inv, node)
    overrides = {**n.overrides, **(sets or {})}
    if image is not None:
        img, version = resolve_version(inv, image)
        overrides["image"] = f"{img.name}@{version.number}"
    tried = resolve_cluster(inv.replace(nodes={**inv.nodes, node: dataclasses.replace(
        n, overrides=overrides)}))
    r = tried.nodes[node]
    s = tried.settings
    snapshot_of = snapshot = None
    if r.profile.server_union:
        # NODE's upper is the server's union's: the canary reads a snapshot of it instead,
        # and unions NODE's layers (the same, in the same order) in its own initramfs.
        snapshot_of = node_layer(tried.dirs, node).upper
        snapshot = Path(str(s.diff_overlay_dir(canary_name(node)))) / SNAPSHOT_DIR
        tried = resolve_cluster(inv.replace(nodes={**inv.nodes, node: dataclasses.replace(
            n, overrides={**overrides, "union": str(UnionMode.CLIENT)})}))
    if r.image.live:
        raise InvalidValue(f"node {node} boots the server's live `/`, which has no versions "
                           "to try", hint="pin an image with versions (`--image NAME@N`)")
    ctx = BootCatalog(tried).node_context(node)
    spec = canary_root(parse(ctx.root_spec), NfsLayer(
        server=str(s.server_address), path=s.diff_overlay_dir(node)),
        read_from=PurePosixPath(snapshot) if snapshot else None)
    ctx = dataclasses.replace(ctx, root_spec=format_spec(spec))
    boot_dir = Path(str(s.boot_dir))
    entry = {k: v for k, v in overrides.items() if k in CHECK_KEYS}
    if snapshot is not None:  # the canary's own entry: never a union the server mounts
        entry["union"] = str(UnionMode.CLIENT)
    return TryPlan(node=node, canary=canary_name(node), image=r.image.ref,
                   address=address or canary_address(inv), mac=random_mac(),
                   kernel=boot_dir / ctx.kernel, initramfs=boot_dir / ctx.initramfs,
                   cmdline=render_cmdline(ctx), runlevel=r.profile.runlevel or "default",
                   groups=n.groups, checks=r.profile.checks, check_overrides=entry,
                   snapshot_of=snapshot_of, snapshot=snapshot)


# -- the lab's network ------------------------------------------------------------------------

def lab_netns(workdir: Path) -> str | None:
    """The namespace of the lab run from `workdir` (its server and nodes' network), if one
    runs there with its server in a namespace."""
    ctl = read_control(workdir)
    if ctl is None or not ctl.netns or not supervisor_alive(ctl):
        return None
    return ctl.netns


def canary_network(workdir: Path, inv: Inventory) -> str | ServerSegment:
    """Where the canary goes: the lab's namespace (its bridge) if a lab runs from `workdir`;
    otherwise the network is real, and the canary goes in a private namespace that mirrors
    the segment the settings' interface carries the server's address on, here (lab try runs
    on the server). Nothing else is taken for the lab's: a network not proven to be a lab's
    own is treated as real."""
    netns = lab_netns(workdir)
    if netns is not None:
        return netns
    s = inv.settings
    service = tuple(h.service for h in s.ha_servers if h.host == s.server_address)
    segment = find_segment(s.interface, s.server_address, service=service,
                           http_port=s.http_port)
    if segment is None:
        raise LabError(f"no lab runs from {workdir}, and {s.interface} here does not carry "
                       f"the server's address {s.server_address}",
                       hint="run lab try on the server where `oneroot serve` runs (the canary "
                            "boots in a private namespace that mirrors its network), or "
                            "`oneroot lab up` first")
    return segment


@contextlib.contextmanager
def canary_vm(netns: str, workdir: Path, plan: TryPlan) -> Iterator[QemuVm]:
    """The canary's QEMU on a tap of its own on the lab's bridge, source-guarded like a lab
    node's port (its MAC, its address) in an nftables table of its own; VM, guard and tap
    removed after."""
    vms = workdir / "try"
    vms.mkdir(parents=True, exist_ok=True)
    state = LabState(name=plan.canary, netns=netns, bridge="br0", owner_pid=0,
                     owner_start_time=0)
    # Not the lab's own Lab (its supervisor owns that one): never torn down, only used to
    # run QEMU in the namespace.
    lab = Lab(state, state_file=vms / f"{plan.canary}.state.json", server=None, workdir=vms,
              own_workdir=False)
    tap = Tap(name=f"try{plan.mac.packed[-2:].hex()}")
    subprocess.run(["ip", "-n", netns, "tuntap", "add", "dev", tap.name, "mode", "tap"],
                   check=True, capture_output=True)
    # No `address=`: QemuVm would guard the port in the lab's own table (see guard_own_port).
    vm = QemuVm(lab, tap, mac=plan.mac, kernel=plan.kernel, initrd=plan.initramfs,
                append=plan.cmdline, name=plan.canary, memory_mib=CANARY_MEMORY_MIB,
                workdir=vms)
    guard: str | None = None
    try:
        guard = lab.guard_own_port(tap, mac=plan.mac, address=plan.address)
        subprocess.run(["ip", "-n", netns, "link", "set", tap.name, "master", "br0", "up"],
                       check=True, capture_output=True)
        vm.start()
        yield vm
    finally:
        vm.stop()
        if guard is not None:
            with contextlib.suppress(ExternalToolError):
                lab.unguard_own(guard)
        subprocess.run(["ip", "-n", netns, "link", "del", tap.name], check=False,
                       capture_output=True)
        lab.state_file.unlink(missing_ok=True)


@contextlib.contextmanager
def private_canary_vm(segment: ServerSegment, vms: Path, plan: TryPlan, dhcp: str
                      ) -> Iterator[QemuVm]:
    """The canary's QEMU in a private namespace mirroring the real segment (its DHCP answered
    there with `dhcp`, `lab.canary_dhcp`); namespace, uplink and its tables removed after."""
    vms.mkdir(parents=True, exist_ok=True)
    clean_stale_networks(segment.netns)
    with CanaryNet.create(segment, canary=plan.address, mac=plan.mac, workdir=vms) as net:
        net.answer_dhcp(dhcp)
        vm = QemuVm(net.lab, net.add_tap(), mac=plan.mac, kernel=plan.kernel,
                    initrd=plan.initramfs, append=plan.cmdline, name=plan.canary,
                    memory_mib=CANARY_MEMORY_MIB, workdir=vms)
        try:
            vm.start()
            yield vm
        finally:
            vm.stop()


def canary_dhcp(inv: Inventory, plan: TryPlan) -> str:
    """What serve's DHCP would answer the canary (its entry is in `inv`)."""
    boot = BootCatalog(resolve_cluster(inv)).dhcp_lookup(plan.mac)
    if boot is None:
        raise LabError(f"the canary {plan.canary} is not in the inventory")
    return canary_answer_doc(plan.mac, network_config(inv), boot)


# -- the canary's inventory entry and export --------------------------------------------------

def remove_canary(store: InventoryStore, paths: Paths, canary: str) -> None:
    """The canary's inventory entry, directory and record (so its export) gone."""
    inv = store.load()
    if canary.startswith(CANARY_PREFIX):  # a killed try's snapshot, as the NFS server sees it
        snap = server_view(paths, NfsServerKind(inv.settings.nfs_server)) / str(
            inv.settings.diff_overlay_dir(canary)).lstrip("/") / SNAPSHOT_DIR
        if os.path.lexists(snap):
            remove_tree(snap.parent, (snap.name,))
    if canary in inv.nodes:
        inv_ops.remove_nodes(store, canary)
    if canary.startswith(CANARY_PREFIX):
        own = Path(str(inv.settings.diff_overlay_dir(canary)))
        shutil.rmtree(own, ignore_errors=True)
    remove_record(paths, canary)


def clean_stale(store: InventoryStore, paths: Paths) -> list[str]:
    """Canaries whose `lab try` is gone (killed): removed."""
    stale = [r.canary for r in read_canaries(paths) if not r.alive]
    for canary in stale:
        remove_canary(store, paths, canary)
    return stale


@contextlib.contextmanager
def canary_entry(store: InventoryStore, paths: Paths, plan: TryPlan) -> Iterator[None]:
    """The record first (the export plan reads it on the inventory change that follows),
    then the inventory entry; both removed after, whatever happens."""
    if plan.canary in store.load().nodes:
        raise InvalidValue(f"a node named {plan.canary} exists and is not a canary",
                           hint=f"rename it: `{CANARY_PREFIX}NODE` names lab try's canaries")
    record_canary(paths, canary=plan.canary, node=plan.node, address=plan.address)
    try:
        inv_ops.add_nodes(store, names=plan.canary, macs=[plan.mac], start_ip=plan.address,
                          groups=plan.groups, overrides={**plan.check_overrides,
                                                         "image": plan.image,
                                                         "ephemeral": True},
                          description=f"lab try canary of {plan.node}")
        yield
    finally:
        remove_canary(store, paths, plan.canary)


def _export_text(paths: Paths, kind: NfsServerKind) -> str:
    path = ganesha_files(paths).conf if kind.is_ganesha else EXPORTS_FILE
    try:
        return path.read_text()
    except OSError:
        return ""


def wait_export(paths: Paths, kind: NfsServerKind, plan: TryPlan, *,
                timeout: float = EXPORT_TIMEOUT) -> None:
    """Until the running server's exports give NODE's layer to the canary's address (serve
    re-applies them when the inventory changes): NODE's export, or the canary's own for a
    snapshot."""
    block = re.compile(rf"# [^\n]*of node {re.escape(plan.exported_by)}\b(?P<body>.*?)"
                       r"(\n#|\Z)", re.S)
    deadline = time.monotonic() + timeout
    while True:
        m = block.search(_export_text(paths, kind))
        if m and re.search(rf"\b{re.escape(str(plan.address))}\b", m.group("body")):
            return
        if time.monotonic() > deadline:
            raise LabError(f"the NFS server does not export {plan.node}'s layer to the "
                           f"canary ({plan.address}) after {timeout:g} s",
                           hint="is `oneroot serve` running on this home? (`oneroot status`)")
        time.sleep(POLL)


def server_view(paths: Paths, kind: NfsServerKind) -> Path:
    """Where the NFS server's files are seen from here: the root of its mount namespace
    (`/proc/PID/root`) when it runs in another one (`oneroot serve` under `ip netns exec`,
    NODE's layer a filesystem mounted there: `layer_fs=own`), else `/`."""
    pid = union_ns_pid(running_pid(ganesha_files(paths)) if kind.is_ganesha else None)
    return Path(f"/proc/{pid}/root") if pid is not None else Path("/")


@contextlib.contextmanager
def canary_snapshot(plan: TryPlan, *, limit: int, progress: Progress,
                    view: Path = Path("/")) -> Iterator[None]:
    """A union=server NODE's upper copied as it is now into the canary's own directory
    (which must exist: serve made it for the canary's entry), both as the NFS server sees
    them (`view`, `server_view`); removed after."""
    if plan.snapshot is None or plan.snapshot_of is None:
        yield
        return
    source = view / plan.snapshot_of.relative_to("/")
    dest = view / plan.snapshot.relative_to("/")
    if os.path.lexists(dest):  # a try killed before its clean-up
        remove_tree(dest.parent, (dest.name,))
    snap = snapshot_tree(source, dest, limit=limit)
    progress(f"{plan.node} has union=server: its upper copied for the canary "
             f"({snap.method}, {snap.entries} entries, {snap.bytes / 2**20:.1f} MiB, "
             f"{snap.seconds:.2f} s)")
    try:
        yield
    finally:
        if os.path.lexists(dest):
            remove_tree(dest.parent, (dest.name,))


# -- the run ----------------------------------------------------------------------------------

def judge_checks(paths: Paths, result: TryResult, checks: tuple[Check, ...], *, since: float,
                 progress: Progress, grace: float = CHECK_GRACE) -> None:
    """The runlevel was reached: the try passes if every declared check passed (each result
    read from the events store, waited for up to `grace` seconds)."""
    deadline = time.monotonic() + grace
    while len(found := check_results(paths, result.canary, since=since)) < len(checks) and \
            time.monotonic() < deadline:
        time.sleep(POLL)
    result.checks = [CheckOutcome(check=c, result=found.get(i)) for i, c in enumerate(checks)]
    for outcome in result.checks:
        message = outcome.result.message if outcome.result else ""
        progress(f"{result.canary}: check {outcome.check.text}: {outcome.verdict}"
                 + (f" ({message})" if message else ""))
    failed = [o for o in result.checks if not o.passed]
    result.passed = not failed
    if failed:
        result.stage = CHECKS
        result.reason = (f"{len(failed)} of {len(checks)} checks did not pass: "
                         + "; ".join(f"{o.check.text} ({o.verdict})" for o in failed))


def watch_canary(paths: Paths, vm: QemuVm, result: TryResult, *, since: float,
                 timeout: float, progress: Progress, plan_checks: tuple[Check, ...] = ()
                 ) -> None:
    """Follow the canary's stages (as `oneroot serve` records them) until its runlevel (then
    its checks), a failure, the VM's end or `timeout`; fills `result`."""
    started = time.monotonic()
    while True:
        status = observed(paths)[0].get(result.canary)
        if status is not None and status.time >= since and status.stage != result.stage:
            result.stage = status.stage
            result.stages.append((status.stage, time.monotonic() - started))
            message = status.detail.get("message", "")
            progress(f"{result.canary}: {status.stage}" + (f" ({message})" if message else ""))
            if status.stage == RUNLEVEL:
                judge_checks(paths, result, plan_checks, since=since, progress=progress)
                return
            if status.stage == "failed":
                result.reason = f"the boot failed: {message or 'no message'}"
                return
        text = vm.serial_text()
        panic = BOOT_FAILURES.search(text)
        if panic is not None:
            line = next((ln for ln in text[panic.start():].splitlines() if ln.strip()), "")
            result.reason = f"the console says {line.strip()!r}"
            return
        if not vm.running():
            result.reason = "the VM exited"
            return
        if time.monotonic() - started > timeout:
            result.reason = f"no runlevel within {timeout:g} s"
            return
        time.sleep(POLL)


def try_node(store: InventoryStore, paths: Paths, plan: TryPlan, *,
             network: str | ServerSegment, workdir: Path, timeout: float = DEFAULT_TIMEOUT,
             snapshot_limit: int = DEFAULT_COPY_LIMIT,
             progress: Progress = lambda _m: None) -> TryResult:
    """Boot the canary of `plan` and wait for its runlevel; everything removed after.
    `network`: the lab's namespace, or the real segment (`canary_network`)."""
    started = time.monotonic()
    result = TryResult(node=plan.node, canary=plan.canary, image=plan.image,
                       address=str(plan.address), mac=str(plan.mac),
                       network="lab" if isinstance(network, str) else "private")
    for canary in clean_stale(store, paths):
        progress(f"removed the stale canary {canary}")
    kind = NfsServerKind(store.load().settings.nfs_server)
    with canary_entry(store, paths, plan):
        progress(f"{plan.canary} ({plan.address}) added; waiting for the read-only export "
                 f"of {plan.node}'s layer")
        wait_export(paths, kind, plan)
        since = time.time()
        if isinstance(network, str):
            vm_context = canary_vm(network, workdir, plan)
        else:
            progress(f"the server's network is real: {plan.canary} boots in a private "
                     f"namespace mirroring {network.address.network} ({network.interface})")
            vm_context = private_canary_vm(network, canary_dir(paths) / "vm", plan,
                                           canary_dhcp(store.load(), plan))
        with canary_snapshot(plan, limit=snapshot_limit, progress=progress,
                             view=server_view(paths, kind)), vm_context as vm:
            progress(f"booting {plan.canary}: {plan.node}'s kernel and initramfs on "
                     f"{plan.image}")
            result.serial_log = str(vm.serial_log)
            watch_canary(paths, vm, result, since=since, timeout=timeout, progress=progress,
                         plan_checks=plan.checks)
    result.seconds = time.monotonic() - started
    return result

