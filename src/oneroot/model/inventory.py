"""A whole inventory as one value, its validation, and the plan between two of them.

Every change — a CLI command or a declarative YAML file — is made the same way: build the new
`Inventory`, `validate()` it as a whole, `plan()` the difference, and let the store apply the
plan in one transaction. So bad input can never leave a half-changed database.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from oneroot.errors import Conflict, InvalidValue, NotFound
from oneroot.model.checks import CHECK_KEYS, MAX_CHECKS, check_items
from oneroot.model.cluster import (
    DhcpMode,
    Group,
    Image,
    InitSystem,
    LayerFs,
    NfsServerKind,
    Node,
    Runlevel,
    Settings,
    check_name,
    check_profile_value,
    parse_image_ref,
)
from oneroot.model.haservers import parse_ha_servers
from oneroot.model.pool import check_pool
from oneroot.model.relaypools import parse_relay_pools
from oneroot.net import MacAddress, parse_ipv4, parse_network


@dataclass(frozen=True, slots=True, kw_only=True)
class Inventory:
    settings: Settings = field(default_factory=Settings)
    groups: Mapping[str, Group] = field(default_factory=dict)
    nodes: Mapping[str, Node] = field(default_factory=dict)
    images: Mapping[str, Image] = field(default_factory=dict)
    runlevels: Mapping[str, Runlevel] = field(default_factory=dict)

    def replace(self, **changes: Any) -> Inventory:
        return dataclasses.replace(self, **changes)

    def with_nodes(self, nodes: Iterable[Node]) -> Inventory:
        merged = dict(self.nodes)
        for node in nodes:
            merged[node.name] = node
        return self.replace(nodes=merged)


# ---------------------------------------------------------------------------------------------
# settings <-> plain dicts (the database and the YAML file both store settings as text)

_SETTING_KEYS = tuple(f.name for f in dataclasses.fields(Settings))


def settings_to_dict(settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _SETTING_KEYS:
        value = getattr(settings, key)
        if value is None:
            out[key] = None
        elif isinstance(value, tuple):
            out[key] = [str(v) for v in value]
        elif isinstance(value, bool | int):
            out[key] = value
        else:
            out[key] = str(value)
    return out


def settings_from_dict(data: Mapping[str, Any], base: Settings | None = None) -> Settings:
    """Build settings from text values, naming the bad key when one does not parse."""
    unknown = sorted(set(data) - set(_SETTING_KEYS))
    if unknown:
        raise InvalidValue(
            f"unknown setting {unknown[0]!r}", hint=f"known settings: {', '.join(_SETTING_KEYS)}"
        )
    current = base or Settings()
    kwargs: dict[str, Any] = {}
    for key, raw in data.items():
        kwargs[key] = _parse_setting(key, raw)
    try:
        settings = dataclasses.replace(current, **kwargs)
    except TypeError as exc:  # pragma: no cover - guarded by the key check above
        raise InvalidValue(str(exc)) from None
    return settings


def _parse_setting(key: str, raw: Any) -> Any:
    if key in ("gateway", "pool_start", "pool_end"):
        return None if raw in (None, "", "none") else parse_ipv4(str(raw), what=key)
    if key == "server_address":
        return parse_ipv4(str(raw), what="server address")
    if key == "subnet":
        return parse_network(str(raw))
    if key == "dns":
        items = raw.replace(",", " ").split() if isinstance(raw, str) else list(raw or [])
        return tuple(parse_ipv4(str(v), what="DNS server") for v in items)
    if key == "ha_servers":
        return parse_ha_servers(raw)
    if key == "relay_pools":
        return parse_relay_pools(raw)
    if key == "cephfs_mount" and raw in (None, "", "none"):
        return None
    if key in ("image_root", "state_dir", "group_dir", "boot_dir", "block_dir",
               "cephfs_mount", "ceph_conf"):
        path = PurePosixPath(str(raw))
        if not path.is_absolute() or ".." in path.parts:
            raise InvalidValue(f"{key} {raw!r} must be an absolute path",
                               hint="e.g. /var/state/systems")
        return path
    if key in ("http_port", "lease_time"):
        try:
            number = int(raw)
        except (TypeError, ValueError):
            raise InvalidValue(f"{key} must be a number, not {raw!r}") from None
        if key == "http_port" and not 1 <= number <= 65535:
            raise InvalidValue(f"http_port {number} is not a port number (1-65535)")
        if key == "lease_time" and number < 60:
            raise InvalidValue(f"lease_time {number} is too short", hint="use at least 60 s")
        return number
    if key == "dhcp_mode":
        try:
            return DhcpMode(str(raw))
        except ValueError:
            raise InvalidValue(f"dhcp_mode must be full or proxy, not {raw!r}") from None
    if key == "nfs_server":
        try:
            return NfsServerKind(str(raw))
        except ValueError:
            raise InvalidValue(f"nfs_server must be knfsd, ganesha or ganesha-ceph, not {raw!r}"
                               ) from None
    if key == "layer_fs":
        try:
            return LayerFs(str(raw))
        except ValueError:
            raise InvalidValue(f"layer_fs must be own or shared, not {raw!r}",
                               hint="own: each layer a filesystem of its own (nfs-ganesha "
                                    "isolation, docs/security.md)") from None
    if key in ("ceph_user", "ceph_fs"):
        text = str(raw)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", text):
            raise InvalidValue(f"invalid {key} {text!r}",
                               hint="letters, digits, '.', '_' and '-' (e.g. admin, cephfs)")
        return text
    if key == "discovery":
        return check_profile_value("ephemeral", raw)  # same true/false parsing
    if key == "interface":
        text = str(raw)
        if not text or len(text) > 15 or "/" in text or any(c.isspace() for c in text):
            raise InvalidValue(f"invalid interface name {text!r}", hint="e.g. eth0 or br0")
        return text
    if key == "domain":
        return None if raw in (None, "") else str(raw)
    raise InvalidValue(f"unknown setting {key!r}")  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# validation of a whole inventory


def validate(inv: Inventory) -> None:
    """Raise the first problem found, as a one-line error with a hint."""
    s = inv.settings
    if s.server_address not in s.subnet:
        raise InvalidValue(
            f"server address {s.server_address} is outside the subnet {s.subnet}",
            hint="set server_address and subnet to match (oneroot init --server/--subnet)",
        )
    if s.gateway is not None and s.gateway not in s.subnet:
        raise InvalidValue(f"gateway {s.gateway} is outside the subnet {s.subnet}")
    outside = [a for h in s.ha_servers for a in (h.service, h.host) if a not in s.subnet]
    if outside:
        raise InvalidValue(f"ha_servers address {outside[0]} is outside the subnet {s.subnet}",
                           hint="each server's service and host address are on the segment")
    if (s.pool_start is None) != (s.pool_end is None):
        raise InvalidValue("set both pool_start and pool_end, or neither")
    if s.pool_start is not None and s.pool_end is not None:
        if s.pool_start not in s.subnet or s.pool_end not in s.subnet:
            raise InvalidValue(f"the discovery pool must lie inside {s.subnet}")
        if s.pool_end < s.pool_start:
            raise InvalidValue("pool_end comes before pool_start")
        check_pool(s)
    for relayed in s.relay_pools:
        if relayed.subnet.overlaps(s.subnet):
            raise InvalidValue(f"relay_pools: the segment {relayed.subnet} overlaps the subnet "
                               f"{s.subnet}", hint="a relayed segment is another network "
                               "than the servers' own (whose pool is pool_start-pool_end)")
    for name, group in inv.groups.items():
        check_name("group", name)
        for key, value in group.values.items():
            check_profile_value(key, value)
        _check_refs(inv, f"group {name!r}", group.values)
    for name, rl in inv.runlevels.items():
        check_name("runlevel", name)
        for svc in rl.services:
            if not svc or any(c.isspace() for c in svc) or "/" in svc:
                raise InvalidValue(f"runlevel {name!r}: invalid service name {svc!r}")
    for name, image in inv.images.items():
        check_name("image", name)
        if not image.root.is_absolute():
            raise InvalidValue(f"image {name!r}: root {image.root} must be an absolute path")
    seen_macs: dict[MacAddress, str] = {}
    seen_ips: dict[ipaddress.IPv4Address, str] = {}
    for name, node in inv.nodes.items():
        check_name("node", name)
        if not node.macs:
            raise InvalidValue(f"node {name!r} has no MAC address",
                               hint="give one with --mac 52:54:00:00:00:01")
        for mac in node.macs:
            if mac.is_multicast:
                raise InvalidValue(f"node {name!r}: {mac} is a multicast MAC address",
                                   hint="a NIC's address has the lowest bit of its first byte 0")
            if mac in seen_macs:
                raise Conflict(f"MAC {mac} is already used by node {seen_macs[mac]!r}",
                               hint="each MAC belongs to one node; see `oneroot node list`")
            seen_macs[mac] = name
        _check_address(s, name, node.address)
        if node.address in seen_ips:
            raise Conflict(f"address {node.address} is already used by node "
                           f"{seen_ips[node.address]!r}", hint="pick a free address")
        seen_ips[node.address] = name
        for group_name in node.groups:
            if group_name not in inv.groups:
                raise NotFound(f"node {name!r} names unknown group {group_name!r}",
                               hint=f"create it first with `oneroot group add {group_name}`")
        for key, value in node.overrides.items():
            check_profile_value(key, value)
        _check_refs(inv, f"node {name!r}", node.overrides)
    _check_merged_checks(inv)


def _check_merged_checks(inv: Inventory) -> None:
    """A node runs at most `MAX_CHECKS` checks of each kind, its groups' and its own together
    (resolution concatenates them): refused here, by the command that would pass the limit,
    not when the node is next resolved (rendered, booted)."""
    over: dict[tuple[str, tuple[tuple[str, int], ...]], list[str]] = {}
    for name, node in sorted(inv.nodes.items()):
        sources = [(f"group {g}", inv.groups[g].values) for g in node.groups if g in inv.groups]
        sources.append(("its own", node.overrides))
        for key in CHECK_KEYS:
            counts = tuple((source, len(check_items(key, values[key])))
                           for source, values in sources if key in values)
            counts = tuple(c for c in counts if c[1])
            if sum(n for _, n in counts) > MAX_CHECKS:
                over.setdefault((key, counts), []).append(name)
    if not over:
        return
    (key, counts), names = next(iter(over.items()))
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    who = f"node {names[0]}" if len(names) == 1 else f"nodes {', '.join(names[:3])}{more}"
    parts = " + ".join(f"{n} from {source}" for source, n in counts)
    raise InvalidValue(f"{who} would run {sum(n for _, n in counts)} {key} ({parts}), more "
                       f"than {MAX_CHECKS}",
                       hint=f"a node runs at most {MAX_CHECKS} checks of each kind, from all "
                            "its groups: take some out of those groups (or the node), or fold "
                            "several into one check_commands item")


def _check_address(s: Settings, name: str, address: ipaddress.IPv4Address) -> None:
    if address not in s.subnet:
        raise InvalidValue(f"node {name!r}: address {address} is outside the subnet {s.subnet}",
                           hint="pick an address inside the cluster subnet")
    if address in (s.subnet.network_address, s.subnet.broadcast_address):
        raise InvalidValue(f"node {name!r}: {address} is the subnet's network or broadcast "
                           "address", hint="pick a host address")
    if address == s.server_address:
        raise Conflict(f"node {name!r}: {address} is the server's own address",
                       hint="pick another address")
    if s.gateway is not None and address == s.gateway:
        raise Conflict(f"node {name!r}: {address} is the gateway's address")


def _check_refs(inv: Inventory, owner: str, values: Mapping[str, Any]) -> None:
    runlevel = values.get("runlevel")
    if runlevel and runlevel not in inv.runlevels:
        raise NotFound(f"{owner} names unknown runlevel {runlevel!r}",
                       hint=f"create it with `oneroot runlevel add {runlevel}`")
    server = values.get("server")
    if server and server not in {h.name for h in inv.settings.ha_servers}:
        raise NotFound(f"{owner} names unknown server {server!r}",
                       hint="name one of the setting ha_servers (`oneroot settings show`)")
    image = values.get("image")
    if not image or not inv.images:
        return
    ref = parse_image_ref(str(image))
    found = inv.images.get(ref.name)
    if found is None:
        raise NotFound(f"{owner} names unknown image {ref.name!r}",
                       hint="see `oneroot image list`")
    if ref.version is not None:
        found.complete_version(ref.version)


# ---------------------------------------------------------------------------------------------
# plans


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One row of a plan: `action` is add, change or remove."""

    kind: str  # settings | group | node | image | runlevel
    name: str
    action: str
    before: Any = None
    after: Any = None

    def describe(self) -> str:
        sign = {"add": "+", "remove": "-", "change": "~"}[self.action]
        return f"{sign} {self.kind} {self.name}"


def plan(old: Inventory, new: Inventory) -> list[Change]:
    changes: list[Change] = []
    if old.settings != new.settings:
        changes.append(Change(kind="settings", name="cluster", action="change",
                              before=old.settings, after=new.settings))
    for kind in ("runlevels", "images", "groups", "nodes"):
        before: Mapping[str, Any] = getattr(old, kind)
        after: Mapping[str, Any] = getattr(new, kind)
        singular = kind[:-1]
        for name in sorted(after.keys() - before.keys()):
            changes.append(Change(kind=singular, name=name, action="add", after=after[name]))
        for name in sorted(after.keys() & before.keys()):
            if after[name] != before[name]:
                changes.append(Change(kind=singular, name=name, action="change",
                                      before=before[name], after=after[name]))
        for name in sorted(before.keys() - after.keys()):
            changes.append(Change(kind=singular, name=name, action="remove",
                                  before=before[name]))
    return changes


def check_init_system(text: str) -> InitSystem:
    try:
        return InitSystem(text)
    except ValueError:
        raise InvalidValue(f"init system must be systemd or openrc, not {text!r}") from None
