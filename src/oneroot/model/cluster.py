"""The cluster's data model: plain frozen values, no IO."""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from oneroot.errors import InvalidValue
from oneroot.net import MacAddress

_NAME = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$")


def check_name(kind: str, name: str) -> str:
    """Names become host names, file names and NFS paths: keep them DNS-label safe."""
    if not _NAME.match(name):
        raise InvalidValue(
            f"invalid {kind} name {name!r}",
            hint="use 1-63 lowercase letters, digits, '-' or '_', starting and ending with a "
            "letter or digit",
        )
    return name


class DhcpMode(enum.StrEnum):
    FULL = "full"
    PROXY = "proxy"


class NfsServerKind(enum.StrEnum):
    KNFSD = "knfsd"
    GANESHA = "ganesha"


class InitSystem(enum.StrEnum):
    SYSTEMD = "systemd"
    OPENRC = "openrc"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Cluster-wide settings: where the server is and where things live on it."""

    server_address: ipaddress.IPv4Address = ipaddress.IPv4Address("10.0.0.1")
    interface: str = "eth0"
    subnet: ipaddress.IPv4Network = ipaddress.IPv4Network("10.0.0.0/24")
    gateway: ipaddress.IPv4Address | None = None
    dns: tuple[ipaddress.IPv4Address, ...] = ()
    domain: str | None = None
    dhcp_mode: DhcpMode = DhcpMode.FULL
    image_root: PurePosixPath = PurePosixPath("/")
    state_dir: PurePosixPath = PurePosixPath("/var/state/systems")
    group_dir: PurePosixPath = PurePosixPath("/var/state/groups")
    boot_dir: PurePosixPath = PurePosixPath("/var/lib/oneroot/boot")
    http_port: int = 8080
    nfs_server: NfsServerKind = NfsServerKind.GANESHA
    lease_time: int = 86400
    discovery: bool = False
    pool_start: ipaddress.IPv4Address | None = None
    pool_end: ipaddress.IPv4Address | None = None

    @property
    def netmask(self) -> ipaddress.IPv4Address:
        return self.subnet.netmask

    def diff_overlay_dir(self, node: str) -> PurePosixPath:
        """The node's directory in `root=` (the seed's `/var/state/systems/<node>`)."""
        return self.state_dir / node

    def group_layer_dir(self, group: str) -> PurePosixPath:
        return self.group_dir / group


# Profile keys a group sets and a node may override. Values are str, bool or tuple[str, ...].
PROFILE_KEYS: dict[str, str] = {
    "image": "name of the image whose root is the bottom layer",
    "kernel": "kernel file, relative to the boot dir",
    "initramfs": "initramfs file, relative to the boot dir",
    "runlevel": "runlevel the node boots into (empty: the image's default)",
    "kernel_args": "extra kernel command-line arguments",
    "extra_layers": "extra root= layers (spec text) between the image and group layers",
    "group_layer": "the group's own directory is a read-only layer (true/false)",
    "nfs_options": "NFS mount options for every layer, e.g. vers=4.2",
    "union": "where layers are unioned: client (node-side, the seed's way) or server",
    "bios_loader": "boot loader for BIOS PXE: ipxe (undionly.kpxe) or pxelinux (pxelinux.0)",
    "uefi_loader": "boot loader for UEFI PXE: ipxe (ipxe.efi) or snponly (snponly.efi)",
    "firmware": "firmware of the node: bios or uefi (used by the lab)",
    "ephemeral": "node's layer read-only with a tmpfs on top: changes lost at reboot",
}
LIST_KEYS = frozenset({"kernel_args", "extra_layers"})
BOOL_KEYS = frozenset({"group_layer", "ephemeral"})
_CHOICES: dict[str, tuple[str, ...]] = {
    "union": ("client", "server"),
    "bios_loader": ("ipxe", "pxelinux"),
    "uefi_loader": ("ipxe", "snponly"),
    "firmware": ("bios", "uefi"),
}
DEFAULT_PROFILE: Mapping[str, Any] = {
    "image": "default",
    "kernel": "vmlinuz",
    "initramfs": "initramfs.img",
    "runlevel": "",
    "kernel_args": (),
    "extra_layers": (),
    "group_layer": False,
    "nfs_options": "",
    "union": "client",
    "bios_loader": "ipxe",
    "uefi_loader": "ipxe",
    "firmware": "bios",
    "ephemeral": False,
}

ProfileValue = str | bool | tuple[str, ...]


def check_profile_value(key: str, value: Any) -> ProfileValue:
    """Validate and normalise one profile value (from the CLI, YAML or the database)."""
    if key not in PROFILE_KEYS:
        raise InvalidValue(
            f"unknown setting {key!r}", hint=f"known settings: {', '.join(sorted(PROFILE_KEYS))}"
        )
    if key in LIST_KEYS:
        if isinstance(value, str):
            items = tuple(value.split()) if key == "kernel_args" else tuple(
                v for v in (p.strip() for p in value.split(",")) if v)
        elif isinstance(value, Sequence):
            items = tuple(str(v) for v in value)
        else:
            raise InvalidValue(f"{key} must be a list, not {value!r}")
        for item in items:
            if any(c.isspace() for c in item) or not item:
                raise InvalidValue(f"{key} item {item!r} contains white space",
                                   hint="give one item per argument")
        return items
    if key in BOOL_KEYS:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise InvalidValue(f"{key} must be true or false, not {value!r}")
    if not isinstance(value, str):
        raise InvalidValue(f"{key} must be text, not {value!r}")
    text = value.strip()
    if key in _CHOICES and text not in _CHOICES[key]:
        raise InvalidValue(f"{key} must be one of {', '.join(_CHOICES[key])}, not {text!r}")
    if key == "runlevel" and text:
        check_name("runlevel", text)
    if key == "image":
        check_name("image", text)
    if key in ("kernel", "initramfs") and (not text or text.startswith("/") or ".." in
                                          PurePosixPath(text).parts):
        raise InvalidValue(f"{key} {text!r} must be a path inside the boot dir",
                           hint="give it relative to the boot dir, e.g. vmlinuz")
    if any(c.isspace() for c in text):
        raise InvalidValue(f"{key} {text!r} must not contain white space")
    return text


@dataclass(frozen=True, slots=True, kw_only=True)
class Group:
    """A profile: values shared by the nodes that name it."""

    name: str
    description: str = ""
    values: Mapping[str, ProfileValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    name: str
    macs: tuple[MacAddress, ...]
    address: ipaddress.IPv4Address
    groups: tuple[str, ...] = ("default",)
    overrides: Mapping[str, ProfileValue] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Image:
    """A root directory nodes boot; `/` is the server's own root, as in the seed."""

    name: str
    root: PurePosixPath
    init_system: InitSystem = InitSystem.UNKNOWN
    description: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Runlevel:
    """A named set of services; becomes a systemd target or an OpenRC runlevel."""

    name: str
    services: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedNode:
    """A node with every profile value merged, and where each came from.

    `provenance[key]` is `"default"`, `"group:NAME"` or `"node"`; for list values it names every
    contributor, joined by `+`.
    """

    node: Node
    values: Mapping[str, ProfileValue]
    provenance: Mapping[str, str]

    def text(self, key: str) -> str:
        value = self.values[key]
        assert isinstance(value, str), key
        return value

    def flag(self, key: str) -> bool:
        value = self.values[key]
        assert isinstance(value, bool), key
        return value

    def items(self, key: str) -> tuple[str, ...]:
        value = self.values[key]
        assert isinstance(value, tuple), key
        return value


def resolve(node: Node, groups: Mapping[str, Group]) -> ResolvedNode:
    """Merge defaults < groups (in the node's order) < the node's overrides.

    Scalars: the last source wins. Lists (kernel args, extra layers): concatenated in order.
    """
    values: dict[str, ProfileValue] = dict(DEFAULT_PROFILE)
    sources: dict[str, list[str]] = {key: ["default"] for key in DEFAULT_PROFILE}
    layered: list[tuple[str, Mapping[str, ProfileValue]]] = [
        (f"group:{g}", groups[g].values) for g in node.groups if g in groups
    ]
    layered.append(("node", node.overrides))
    for source, overrides in layered:
        for key, value in overrides.items():
            if key in LIST_KEYS:
                assert isinstance(value, tuple)
                if not value:
                    continue
                base = values[key]
                assert isinstance(base, tuple)
                values[key] = base + value
                sources[key] = [s for s in sources[key] if s != "default"] + [source]
            else:
                values[key] = value
                sources[key] = [source]
    return ResolvedNode(
        node=node, values=values, provenance={k: "+".join(v) for k, v in sources.items()}
    )
