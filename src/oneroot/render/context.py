"""The values renderers read: built by `ops` from the inventory, complete and pre-formatted.

A template only loops over these and prints them; anything that needs a decision (which runlevel
argument, which clients may mount what) is decided here or in the renderer's Python, never in a
template.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import PurePosixPath

from oneroot.model import InitSystem, Settings
from oneroot.net import MacAddress

# nobody/nogroup: who a squashed user becomes (knfsd anonuid/anongid, ganesha Anonymous_*).
ANON_ID = 65534


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialConsole:
    """A serial console: `SERIAL <port> <baud>` for pxelinux, `console=ttyS<port>,<baud>`."""

    port: int = 0
    baud: int = 115200

    @property
    def kernel_arg(self) -> str:
        return f"console=ttyS{self.port},{self.baud}"


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeBootContext:
    """Everything one node's boot files say.

    `kernel` and `initramfs` are relative to the boot dir, which is both the TFTP root and the
    directory served at `boot_url` over HTTP (so the kernel's URL is `{boot_url}/{kernel}`).
    `root_spec` is the node's `root=` value, already formatted by the caller (`oneroot.rootspec`).
    `runlevel` is None for the image's default target/runlevel.
    `status_url`, when set, is passed as `oneroot.status=URL`: where the initramfs reports stages.
    """

    name: str
    macs: tuple[MacAddress, ...]
    address: ipaddress.IPv4Address
    server_address: ipaddress.IPv4Address
    boot_url: str
    kernel: str
    initramfs: str
    root_spec: str
    runlevel: str | None = None
    init_system: InitSystem = InitSystem.UNKNOWN
    kernel_args: tuple[str, ...] = ()
    serial: SerialConsole | None = None
    status_url: str | None = None
    retry_seconds: int = 10

    @property
    def kernel_url(self) -> str:
        return f"{self.boot_url}/{self.kernel}"

    @property
    def initramfs_url(self) -> str:
        return f"{self.boot_url}/{self.initramfs}"

    @property
    def initramfs_name(self) -> str:
        """The name iPXE gives the fetched initramfs (the last URL segment)."""
        return PurePosixPath(self.initramfs).name


@dataclass(frozen=True, slots=True, kw_only=True)
class DefaultBootContext:
    """`pxelinux.cfg/default`: what a machine oneroot does not know gets (its local disk)."""

    timeout_seconds: int = 10
    serial: SerialConsole | None = None

    @property
    def timeout_tenths(self) -> int:
        return self.timeout_seconds * 10


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageExport:
    """An image root, exported read-only to `clients`, or to the whole cluster subnet when
    there are none (an image's version 1 and unversioned images, as before versions).

    `export_id` must stay the same from one render to the next: nfs-ganesha puts it in file
    handles, and it is the knfsd `fsid`, so a changed id gives clients stale handles.
    """

    name: str
    path: PurePosixPath
    export_id: int
    # A version `NAME@N` (N ≥ 2): the nodes that boot it next or still run it (a `lab try`
    # canary is one: it is pinned to the version it tries).
    clients: tuple[ipaddress.IPv4Address, ...] = ()
    # `path` is the masked view of a live root (`nfs.view`): knfsd exports it only while it
    # is mounted (`mp`), every user squashed to `ANON_ID` (docs/security.md, "Forged file
    # handles"): a handle forged to a masked file reads only what is world-readable, and
    # the view shows nothing else (its emptied dirs are o+rx in its upper, `nfs.view`).
    view: bool = False
    # knfsd: this image's masked view of the server's `/` is the NFSv4 root (`fsid=0`), so the
    # seed's `server:/` names it; the node and group layers are bound inside it (docs/nfs.md).
    v4_root: bool = False
    # Not an image: the directory of the versions' EROFS files (`union=block`, block_dir).
    block: bool = False
    # knfsd: the directory is not the root of a filesystem of its own (an image in HOME on the
    # server's `/`, a version, the block dir): exported `subtree_check`, or a forged handle
    # with its fsid reaches every file of that filesystem (`ops.knfsd_layout.check_subtrees`).
    subtree_check: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterNode:
    """A node as the cluster-wide files see it.

    `export_path` is the directory exported read-write to this node alone: its diff-overlay dir
    (`settings.diff_overlay_dir(name)`) or, for a server-side union (`server_union`), the
    overlayfs mount of its merged tree, which knfsd exports only with an explicit `fsid`.
    `bios_boot_file` / `uefi_boot_file` are what PXE firmware loads by TFTP (`undionly.kpxe` or
    `pxelinux.0`; `ipxe.efi` or `snponly.efi`); `ipxe_script_url` is what iPXE fetches next.
    """

    name: str
    macs: tuple[MacAddress, ...]
    address: ipaddress.IPv4Address
    export_path: PurePosixPath
    export_id: int
    ipxe_script_url: str
    server_union: bool = False
    # An ephemeral node mounts its layer read-only under a tmpfs: exported read-only, so
    # whatever it (or a host holding its address) writes cannot outlive the boot.
    read_only: bool = False
    # knfsd: exported at its junction inside the NFSv4 root view (a bind mount), so with a
    # fixed `fsid` like every export that is not a plain directory of its own.
    fixed_fsid: bool = False
    # knfsd: the layer dir is not the root of a filesystem of its own (a directory of the
    # state filesystem, which holds every node's layer): exported `subtree_check`, or a forged
    # handle with its fsid reaches the other layers (`ops.knfsd_layout.check_subtrees`).
    # Never for a server-side union (overlayfs: its own filesystem, no connectable handles).
    subtree_check: bool = False
    bios_boot_file: str = "undionly.kpxe"
    uefi_boot_file: str = "ipxe.efi"
    # Addresses that may mount the node's layer read-only besides the node: a `lab try`
    # canary booting a copy of the node, for as long as it runs (never the node's address).
    readers: tuple[ipaddress.IPv4Address, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupLayerExport:
    """A group's layer dir, exported read-only to the addresses of the group's nodes."""

    name: str
    path: PurePosixPath
    export_id: int
    clients: tuple[ipaddress.IPv4Address, ...]
    fixed_fsid: bool = False  # as ClusterNode.fixed_fsid
    subtree_check: bool = False  # as ClusterNode.subtree_check


@dataclass(frozen=True, slots=True, kw_only=True)
class CephExports:
    """nfs_server=ganesha-ceph: exports come from CephFS through FSAL_CEPH, mounted on this
    server at `mount` (an export's FSAL path is its path below `mount`), and client state is
    kept in RADOS (`pool`/`namespace`) under this ganesha instance's `nodeid`."""

    mount: PurePosixPath
    conf: PurePosixPath
    user: str
    fs_name: str
    nodeid: str
    pool: str = "nfs-ganesha"
    namespace: str = "oneroot"
    # Each export's cephx user (`export_user`), whose MDS caps reach only that export's
    # directory: ganesha does not check that a handle lies below its export, the MDS does
    # (a forged inode number outside the path gets NFS4ERR_ACCESS).
    per_export_users: bool = True

    def export_user(self, export_id: int, path: PurePosixPath) -> str:
        """`USER-export-ID-HASH`: the hash of its CephFS path, so that another home's export
        with the same id on the same Ceph never shares the user (and its caps)."""
        if not self.per_export_users:
            return self.user
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
        return f"{self.user}-export-{export_id}-{digest}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterContext:
    """The cluster-wide files: exports, nfs-ganesha config, dnsmasq config.

    `nfs_protocols`: NFSv3 needs rpcbind running (ganesha exits `Cannot register NFS V3`
    without it); `(4,)` needs nothing else. `nfs_port`/`mnt_port` differ from the standard
    2049/20048 only in tests that must not collide with a real server.
    """

    settings: Settings
    images: tuple[ImageExport, ...]
    nodes: tuple[ClusterNode, ...] = ()
    group_layers: tuple[GroupLayerExport, ...] = ()
    nfs_protocols: tuple[int, ...] = (3, 4)
    nfs_port: int = 2049
    mnt_port: int = 20048
    ceph: CephExports | None = None  # ganesha-ceph only


class Access(enum.StrEnum):
    RO = "ro"
    RW = "rw"


@dataclass(frozen=True, slots=True, kw_only=True)
class NfsExport:
    """One exported directory and who may mount it: the common ground of exports and ganesha."""

    export_id: int
    path: PurePosixPath
    access: Access
    clients: tuple[str, ...]
    comment: str
    # More clients, read-only whatever `access` is (a `lab try` canary reading a node's layer).
    readers: tuple[str, ...] = ()
    # Image roots: show filesystems mounted below the export (a separate /usr, a view's
    # submounts). `fsid`: a stable id independent of the device, which knfsd needs for an
    # overlayfs mount (no UUID to derive one from); never 0, the NFSv4 root.
    crossmnt: bool = False
    fsid: int | None = None
    # Map a client's uid 0 to the anonymous user (docs/security.md says where and why).
    root_squash: bool = False
    # Map every user to `ANON_ID` (a live root's masked view: a forged handle of a masked
    # file then reads only what others may read; docs/security.md, "Forged file handles").
    all_squash: bool = False
    # A live root's masked view: knfsd exports it only while mounted (`mp`), so an
    # unmounted view never exports the empty directory under it on the root filesystem.
    masked_view: bool = False
    # knfsd's NFSv4 root: `fsid=0` instead of `fsid`, which stays the export's id for ganesha.
    v4_root: bool = False
    # knfsd: a directory that is not the root of a filesystem of its own (a layer on the
    # state filesystem, an image in HOME). Without it a forged handle (the export's fsid + any
    # inode/generation) reaches every file of that filesystem: the classic subtree escape
    # (tests/e2e/test_knfsd.py).
    subtree_check: bool = False

    @property
    def knfsd_options(self) -> str:
        return self.knfsd_options_for(self.access)

    def knfsd_options_for(self, access: Access) -> str:
        squash = ("root_squash" if self.root_squash else "no_root_squash")
        if self.all_squash:
            squash = f"all_squash,anonuid={ANON_ID},anongid={ANON_ID}"
        subtree = "subtree_check" if self.subtree_check else "no_subtree_check"
        options = [access.value, "sync", squash, subtree]
        if self.masked_view:
            options.append("mp")
        if self.crossmnt:
            options.append("crossmnt")
        if self.v4_root:
            options.append("fsid=0")
        elif self.fsid is not None:
            options.append(f"fsid={self.fsid}")
        return ",".join(options)

    @property
    def ganesha_access(self) -> str:
        return self.access.value.upper()

    @property
    def ganesha_squash(self) -> str:
        if self.all_squash:
            return "All_Squash"
        return "Root_Squash" if self.root_squash else "No_Root_Squash"
