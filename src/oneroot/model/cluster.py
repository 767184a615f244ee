"""The cluster's data model: plain frozen values, no IO."""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from oneroot.errors import InvalidValue, NotFound
from oneroot.model.haservers import HaServer
from oneroot.model.imageversion import ImageRef, ImageVersion, VersionState, parse_image_ref
from oneroot.model.names import check_name as check_name
from oneroot.model.profile import (
    LIST_KEYS,
    PROFILE_KEYS,
    Profile,
    ProfileValue,
)
from oneroot.model.profile import check_profile_value as check_profile_value
from oneroot.model.relaypools import RelayPool
from oneroot.net import MacAddress

__all__ = ["PROFILE_KEYS", "DhcpMode", "Group", "Image", "ImageRef", "ImageVersion",
           "InitSystem", "NfsServerKind", "Node", "ProfileValue", "ResolvedNode", "Runlevel",
           "Settings", "VersionState", "check_name", "check_profile_value", "parse_image_ref",
           "resolve"]


def check_expose_path(text: str) -> PurePosixPath:
    """A path of a live root the administrator lets nodes see: absolute, normal, not `/`."""
    path = PurePosixPath(text)
    if (not path.is_absolute() or ".." in path.parts or not path.relative_to("/").parts
            or any(c in text for c in "\n\0")):
        raise InvalidValue(f"cannot expose {text!r}",
                           hint="give an absolute path below / (e.g. /etc/sudoers)")
    return path


class DhcpMode(enum.StrEnum):
    FULL = "full"
    PROXY = "proxy"


class NfsServerKind(enum.StrEnum):
    KNFSD = "knfsd"
    GANESHA = "ganesha"
    GANESHA_CEPH = "ganesha-ceph"  # nfs-ganesha exporting from CephFS (FSAL_CEPH)

    @property
    def is_ganesha(self) -> bool:
        """nfs-ganesha run and supervised by oneroot (either FSAL)."""
        return self is not NfsServerKind.KNFSD


class LayerFs(enum.StrEnum):
    """Where node and group layers live (nfs_server=ganesha; docs/security.md)."""

    OWN = "own"  # each layer a filesystem of its own (a loop-mounted ext4 image)
    SHARED = "shared"  # directories of the state dir's filesystem: forged handles cross them

    def applies(self, server: NfsServerKind) -> bool:
        """Own filesystems for every layer are made for FSAL_VFS only: with knfsd, each layer
        that is not a filesystem of its own is exported `subtree_check`
        (`ops.knfsd_layout.check_subtrees`; knfsd checks nothing unless told), but the layers
        of `union=server` nodes are filesystems of their own whatever this says
        (`ops.union_fs.owns_layer_fs`: overlayfs decodes handles itself); ganesha-ceph's
        layers live in CephFS (a cephx user per export)."""
        return self is LayerFs.OWN and server is NfsServerKind.GANESHA


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
    # union=block: each image version's EROFS file (`NAME@N.erofs`), exported read-only.
    block_dir: PurePosixPath = PurePosixPath("/var/lib/oneroot/blocks")
    http_port: int = 8080
    nfs_server: NfsServerKind = NfsServerKind.GANESHA
    layer_fs: LayerFs = LayerFs.OWN
    lease_time: int = 86400
    discovery: bool = False
    pool_start: ipaddress.IPv4Address | None = None
    pool_end: ipaddress.IPv4Address | None = None
    # nfs_server=ganesha-ceph: where this server mounts CephFS (images and layers live below
    # it), the cluster's config, the cephx user ganesha connects as, and the filesystem name.
    cephfs_mount: PurePosixPath | None = None
    ceph_conf: PurePosixPath = PurePosixPath("/etc/ceph/ceph.conf")
    ceph_user: str = "admin"
    ceph_fs: str = "cephfs"
    # Boot servers backing each other up: each one's service address moves to a peer (VRRP)
    # whose ganesha-ceph instance for it takes over its clients (`oneroot nfs instance`).
    ha_servers: tuple[HaServer, ...] = ()
    # Discovery pools of segments behind DHCP relays (by the relay's giaddr); `pool_start` and
    # `pool_end` are the pool of `subnet`, the servers' own segment.
    relay_pools: tuple[RelayPool, ...] = ()

    @property
    def netmask(self) -> ipaddress.IPv4Address:
        return self.subnet.netmask

    def diff_overlay_dir(self, node: str) -> PurePosixPath:
        """The node's directory in `root=` (the seed's `/var/state/systems/<node>`)."""
        return self.state_dir / node

    def group_layer_dir(self, group: str) -> PurePosixPath:
        return self.group_dir / group


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
    # Paths of a live root (`/`) nodes may see beyond its system directories (`--expose`).
    expose: tuple[PurePosixPath, ...] = ()
    # Its versions, oldest first; none stored: the image is its own version 1 (`root`).
    versions: tuple[ImageVersion, ...] = ()
    # The version this value stands for (`at(n)`); None: the image as stored.
    version: int | None = None

    @property
    def live(self) -> bool:
        """The server's own `/` (the seed's way): one live root, no versions."""
        return self.root == PurePosixPath("/")

    def all_versions(self) -> tuple[ImageVersion, ...]:
        if self.versions:
            return self.versions
        return (ImageVersion(number=1, root=self.root, command="(before versions)",
                             init_system=self.init_system.value),)

    def latest(self) -> ImageVersion:
        """The newest complete version: what `image=NAME` boots."""
        done = [v for v in self.all_versions() if v.complete]
        return done[-1] if done else self.all_versions()[0]

    def get_version(self, number: int) -> ImageVersion:
        """Version `number`; `NotFound` (with what exists) when there is none."""
        for v in self.all_versions():
            if v.number == number:
                return v
        known = ", ".join(f"{self.name}@{v.number}" for v in self.all_versions())
        raise NotFound(f"image {self.name} has no version {number}",
                       hint=f"its versions: {known} (see `oneroot image versions {self.name}`)")

    def complete_version(self, number: int) -> ImageVersion:
        """Version `number`, refused unless complete (what a pin may name)."""
        v = self.get_version(number)
        if not v.complete:
            raise InvalidValue(f"image {self.name}@{number} is not complete ({v.state.value})",
                               hint=f"wait for it, or pin a complete version "
                                    f"(`oneroot image versions {self.name}`)")
        return v

    def at(self, number: int | None) -> Image:
        """This image as version `number` (None: the latest) boots it: that version's root
        and init system. An unknown number gives the latest (validation refuses such pins).
        An image with no stored versions is its own version 1: itself."""
        if not self.versions:
            return self
        known = {v.number: v for v in self.all_versions()}
        v = known.get(number) if number is not None else None
        v = v if v is not None and v.complete else self.latest()
        init = InitSystem(v.init_system) if v.init_system in InitSystem._value2member_map_ \
            else self.init_system
        return Image(name=self.name, root=v.root, init_system=init,
                     description=self.description, expose=self.expose,
                     versions=self.versions, version=v.number)

    def selected(self) -> ImageVersion | None:
        """The stored version this value stands for (`at(n)`), None without versions."""
        return next((v for v in self.versions if v.number == self.version), None)

    @property
    def ref(self) -> str:
        """`NAME@N` of the version this value stands for, or `NAME`."""
        return self.name if self.version is None else f"{self.name}@{self.version}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Runlevel:
    """A named set of services; becomes a systemd target or an OpenRC runlevel."""

    name: str
    services: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedNode:
    """A node with every profile value merged, its image looked up, and where each value came
    from.

    `provenance[key]` is `"default"`, `"group:NAME"` or `"node"`; for list values it names every
    contributor, joined by `+`.
    """

    node: Node
    profile: Profile
    image: Image  # the profile's image; an unknown name boots the settings' image root
    provenance: Mapping[str, str]

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def values(self) -> dict[str, ProfileValue]:
        """The profile as text-keyed plain values, in `PROFILE_KEYS` order (for display)."""
        return self.profile.as_values()


def resolve(node: Node, groups: Mapping[str, Group], *, images: Mapping[str, Image],
            image_root: PurePosixPath) -> ResolvedNode:
    """Merge defaults < groups (in the node's order) < the node's overrides.

    Scalars: the last source wins. Lists (kernel args, extra layers): concatenated in order.
    Groups the node names that do not exist are skipped (validation reports them).
    """
    values: dict[str, ProfileValue] = {}
    sources: dict[str, list[str]] = {key: ["default"] for key in PROFILE_KEYS}
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
                base = values.get(key, ())
                assert isinstance(base, tuple)
                values[key] = base + value
                sources[key] = [s for s in sources[key] if s != "default"] + [source]
            else:
                values[key] = value
                sources[key] = [source]
    profile = Profile.from_values(values)
    ref = _image_ref(profile.image)
    found = images.get(ref.name)
    image = (found.at(ref.version) if found is not None else
             Image(name=ref.name, root=image_root, init_system=InitSystem.UNKNOWN))
    return ResolvedNode(node=node, profile=profile, image=image,
                        provenance={k: "+".join(v) for k, v in sources.items()})


def _image_ref(text: str) -> ImageRef:
    try:
        return parse_image_ref(text)
    except InvalidValue:  # resolve never raises: validation reports it
        return ImageRef(name=text)
