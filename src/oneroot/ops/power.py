"""Power control of nodes through their BMCs: `oneroot power`, `oneroot node reboot`.

Many nodes at once, at most `parallel` BMC sessions in flight; one result per node, in the
order the nodes were named, whatever happened to the others.
"""

from __future__ import annotations

import enum
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from oneroot.bmc import BmcCredentials, BmcSession, PowerState, connect
from oneroot.errors import BmcError, ConfigError, OnerootError
from oneroot.inventory import database
from oneroot.inventory.events import EventStore
from oneroot.model.cluster import ResolvedNode
from oneroot.model.events import BootEvent, bmc_stage_event
from oneroot.model.paths import Paths
from oneroot.model.profile import BmcProtocol, split_bmc_address
from oneroot.model.ranges import expand_names
from oneroot.model.resolved import ResolvedCluster

log = logging.getLogger(__name__)

DEFAULT_PARALLEL = 32
MAX_PASSWORD_FILE = 4096
IPMI_PORT = 623
REDFISH_PORT = 443
SETTLE = 15.0  # seconds a node may take to report the state it was asked for
Recorder = Callable[[Sequence[BootEvent]], None]


class PowerAction(enum.StrEnum):
    STATUS = "status"
    ON = "on"
    OFF = "off"
    CYCLE = "cycle"  # off, then on (on for a node that is off)
    RESET = "reset"  # a hard reset, no power loss


@dataclass(frozen=True, slots=True, kw_only=True)
class PowerResult:
    node: str
    action: PowerAction
    bmc: str  # HOST:PORT, or "" when the node has none
    state: PowerState | None = None  # after the action (asked of the BMC again)
    error: str | None = None
    hint: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_json(self) -> dict[str, object]:
        return {"node": self.node, "action": self.action.value, "bmc": self.bmc,
                "state": self.state.value if self.state else None, "ok": self.ok,
                "error": self.error, "hint": self.hint}


def credentials(node: ResolvedNode) -> BmcCredentials:
    """The node's BMC address, user and password (read from its root-only file)."""
    profile = node.profile
    if not profile.bmc_address:
        raise ConfigError(f"node {node.name} has no BMC",
                          hint=f"oneroot node set {node.name} --set bmc_address=HOST "
                               "--set bmc_user=USER --set bmc_password_file=/PATH "
                               "(or set them on its group)")
    if not profile.bmc_user or not profile.bmc_password_file:
        missing = "bmc_user" if not profile.bmc_user else "bmc_password_file"
        raise ConfigError(f"node {node.name}: {missing} is not set",
                          hint=f"oneroot node set {node.name} --set {missing}=…")
    protocol = profile.bmc_protocol
    redfish = protocol is BmcProtocol.REDFISH
    scheme, host, port = split_bmc_address(
        profile.bmc_address, default_port=REDFISH_PORT if redfish else IPMI_PORT)
    if scheme and not redfish:
        raise ConfigError(f"node {node.name}: bmc_address {profile.bmc_address!r} is a URL, "
                          "but IPMI takes HOST[:PORT]",
                          hint=f"oneroot node set {node.name} --set bmc_protocol=redfish, "
                               "or drop the scheme")
    return BmcCredentials(host=host, port=port, user=profile.bmc_user,
                          password=read_password_file(Path(profile.bmc_password_file)),
                          protocol=protocol, scheme=(scheme or "https") if redfish else "",
                          ca_file=profile.bmc_ca_file)


def read_password_file(path: Path) -> str:
    """The first line of a regular, root-only file: never through a link, never large."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise ConfigError(f"cannot read the BMC password file {path}: {error.strerror}",
                          hint="create it with the password on one line, mode 0600") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_PASSWORD_FILE:
            raise ConfigError(f"BMC password file {path} is not a small regular file",
                              hint="put the password alone on one line")
        if st.st_mode & 0o077:
            raise ConfigError(f"BMC password file {path} can be read by others "
                              f"(mode {stat.S_IMODE(st.st_mode):04o})",
                              hint=f"chmod 600 {path}")
        data = os.read(fd, MAX_PASSWORD_FILE)
    finally:
        os.close(fd)
    password = data.decode("utf-8", "replace").split("\n", 1)[0].rstrip("\r")
    if not password:
        raise ConfigError(f"BMC password file {path} is empty",
                          hint="put the password alone on its first line")
    return password


def _act(bmc: BmcSession, action: PowerAction, *, pxe: bool, pxe_required: bool = True
         ) -> None:
    if pxe:
        try:
            bmc.boot_from_network_once()
        except BmcError as error:
            # A diskless node network-boots anyway: where the caller says so, a BMC that has no
            # boot device option (the lab's ipmi_sim that runs its VM) does not stop the action.
            if pxe_required:
                raise
            log.warning("power.pxe_refused bmc=%s error=%s: going on (the node network-boots "
                        "anyway)", bmc.creds.where, error.message)
    match action:
        case PowerAction.ON:
            bmc.power_on()
        case PowerAction.OFF:
            bmc.power_off()
        case PowerAction.CYCLE:
            bmc.power_cycle()
        case PowerAction.RESET:
            bmc.reset()
        case PowerAction.STATUS:
            pass


# The state each action leads to; BMCs take a moment (ipmi_sim ~1 s, Redfish BMCs several).
_EXPECTED = {PowerAction.ON: PowerState.ON, PowerAction.OFF: PowerState.OFF,
             PowerAction.CYCLE: PowerState.ON}


def _settled_state(bmc: BmcSession, action: PowerAction) -> PowerState:
    """The power state once the action took effect, asked again for a while (`SETTLE`)
    before the row reports a state that is not the one asked for."""
    deadline = time.monotonic() + SETTLE
    state = bmc.power_state()
    expected = _EXPECTED.get(action)
    while expected is not None and state is not expected and time.monotonic() < deadline:
        time.sleep(0.5)
        state = bmc.power_state()
    return state


def _one(node: ResolvedNode, action: PowerAction, pxe: bool,
         pxe_required: bool = True) -> PowerResult:
    where = node.profile.bmc_address
    try:
        creds = credentials(node)
        where = creds.where
        with connect(creds) as bmc:
            _act(bmc, action, pxe=pxe, pxe_required=pxe_required)
            state = _settled_state(bmc, action)
    except OnerootError as error:
        return PowerResult(node=node.name, action=action, bmc=where, error=error.message,
                           hint=error.hint)
    return PowerResult(node=node.name, action=action, bmc=where, state=state)


def select(cluster: ResolvedCluster, patterns: tuple[str, ...]) -> list[ResolvedNode]:
    """Nodes named by `node01`, `node[01-64]`… in order, each once; unknown names raise."""
    seen: dict[str, ResolvedNode] = {}
    for pattern in patterns:
        for name in expand_names(pattern):
            seen.setdefault(name, cluster.node(name))
    return list(seen.values())


def power(cluster: ResolvedCluster, patterns: tuple[str, ...], action: PowerAction, *,
          pxe: bool = False, parallel: int = DEFAULT_PARALLEL,
          progress: Callable[[PowerResult], None] | None = None,
          record: Recorder | None = None, pxe_required: bool = True) -> list[PowerResult]:
    """Apply `action` to every node named; `pxe` sets a one-time network boot first (a BMC
    refusing it fails the node unless not `pxe_required`: rollouts of network-booted nodes).
    `record` gets the stage each success means (`off`, `power-on`: see `stage_events`)."""
    nodes = select(cluster, patterns)
    if parallel < 1:
        raise ConfigError("--parallel must be at least 1")
    results: dict[str, PowerResult] = {}
    with ThreadPoolExecutor(max_workers=min(parallel, max(1, len(nodes)))) as pool:
        for done in as_completed([pool.submit(_one, n, action, pxe, pxe_required) for n in nodes]):
            result = done.result()  # _one turns every OnerootError into a result
            results[result.node] = result
            if progress is not None:
                progress(result)
    ordered = [results[n.name] for n in nodes]
    if record is not None:
        events = stage_events(ordered, now=time.time())
        if events:
            record(events)
    return ordered


# The stage a successful action puts a node in; a cycle or a reset starts a new boot.
STAGE_AFTER = {PowerAction.OFF: "off", PowerAction.ON: "power-on",
               PowerAction.CYCLE: "power-on", PowerAction.RESET: "power-on"}


def stage_events(results: Sequence[PowerResult], *, now: float) -> list[BootEvent]:
    """The BMC-side stage events of the actions that succeeded (`status` changes nothing)."""
    return [bmc_stage_event(node=r.node, stage=STAGE_AFTER[r.action], action=r.action.value,
                            time=now)
            for r in results if r.ok and r.action in STAGE_AFTER]


def failures(results: list[PowerResult]) -> Iterator[PowerResult]:
    return (r for r in results if not r.ok)


def raise_for_failures(results: list[PowerResult]) -> None:
    """One `error:` for the whole run when any node failed (the table shows which)."""
    failed = list(failures(results))
    if not failed:
        return
    if len(results) == 1:
        raise BmcError(f"{failed[0].node}: {failed[0].error}", hint=failed[0].hint)
    raise BmcError(f"{len(failed)} of {len(results)} nodes failed: "
                   f"{', '.join(r.node for r in failed[:8])}{'…' if len(failed) > 8 else ''}",
                   hint="see each node's error above")


def store_recorder(paths: Paths) -> Recorder:
    """A `record` for `power()` that writes to the home's event store (its own connection,
    safe beside a running server's writer), where `oneroot status` and serve's page read it."""
    def record(events: Sequence[BootEvent]) -> None:
        store = EventStore(database.locate(paths, paths.events_db))
        try:
            store.record(events)
        finally:
            store.close()
    return record
