"""The boot catalog: everything `oneroot serve` hands out, computed from one resolved cluster.

Built once per inventory load; per-node files are rendered on first request and cached in the
catalog (so they go with it when a reload replaces it), so a 5,000-node cluster costs nothing
until its nodes boot.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address

from oneroot.errors import InvalidValue
from oneroot.model.cluster import Image, ImageRef, ResolvedNode, parse_image_ref
from oneroot.model.inventory import Inventory
from oneroot.model.profile import BiosLoader, UefiLoader
from oneroot.model.resolved import ResolvedCluster
from oneroot.net import MacAddress
from oneroot.ops.boot import root_spec_text, storage_kernel_args, union_merged_dir
from oneroot.ops.image_block import block_images
from oneroot.proto.dhcp import NetworkConfig, NodeBoot
from oneroot.render.boot import (
    grub_filename,
    ipxe_filename,
    pxelinux_filename,
    render_grub,
    render_ipxe,
    render_pxelinux,
    render_pxelinux_default,
)
from oneroot.render.context import (
    ClusterContext,
    ClusterNode,
    DefaultBootContext,
    GroupLayerExport,
    ImageExport,
    NodeBootContext,
    SerialConsole,
)

BIOS_FILES = {BiosLoader.IPXE: "undionly.kpxe", BiosLoader.PXELINUX: "pxelinux.0"}
UEFI_FILES = {UefiLoader.IPXE: "ipxe.efi", UefiLoader.SNPONLY: "snponly.efi"}
REPORT_PATH = "/api/v1/report"
CHECKS_PATH = "/api/v1/checks"  # a node's declared checks (`model.checks`)
# union=block: the EROFS files' directory (`settings.block_dir`), one read-only export.
BLOCKS_KEY = "blocks:block_dir"
DEFAULT_SERIAL = SerialConsole()


_ID_BASE, _ID_SPAN = 100, 65000


def stable_id(kind: str, name: str) -> int:
    """Where an object's export id search starts: a hash of its kind and name."""
    digest = hashlib.sha256(f"{kind}:{name}".encode()).digest()
    return _ID_BASE + int.from_bytes(digest[:4], "big") % _ID_SPAN


def assign_export_ids(keys: Iterable[str], existing: Mapping[str, int]) -> dict[str, int]:
    """Export ids for `kind:name` keys: existing ones kept, new ones hashed then probed.

    ganesha puts the id in every file handle (and knfsd uses it as `fsid`), so an object keeps
    its id for life: `existing` is the persisted map (see `ops.exportids`).
    """
    wanted = sorted(set(keys))
    ids = {k: v for k, v in existing.items() if k in wanted}
    used = set(existing.values())  # a removed object's id is not handed to another
    for key in wanted:
        if key in ids:
            continue
        kind, _, name = key.partition(":")
        candidate = stable_id(kind, name)
        while candidate in used:
            candidate = _ID_BASE + (candidate - _ID_BASE + 1) % _ID_SPAN
        ids[key] = candidate
        used.add(candidate)
    return ids


def export_name(image: Image, version: int | None) -> str:
    """An image version's name among the exports: `NAME` for version 1 (what the image was
    before versions: its export and id stay), `NAME@N` after."""
    return image.name if version in (None, 1) else f"{image.name}@{version}"


def node_boot_files(r: ResolvedNode) -> tuple[str, str]:
    """The kernel and initramfs the node boots (relative to the boot dir): those of the image
    version it boots when that version has its own (so pinning an old version boots its
    kernel again), unless a group or the node names them."""
    version = r.image.selected()
    kernel, initramfs = r.profile.kernel, r.profile.initramfs
    if version is not None and version.kernel and version.initramfs:
        if r.provenance.get("kernel") == "default":
            kernel = version.kernel
        if r.provenance.get("initramfs") == "default":
            initramfs = version.initramfs
    return kernel, initramfs


def _ref_or_none(text: str) -> ImageRef | None:
    try:
        return parse_image_ref(text)
    except InvalidValue:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualFile:
    node: str | None
    data: bytes
    image: str | None = None  # the image version the file boots (`NAME@N`), for a node's


class BootCatalog:
    def __init__(self, cluster: ResolvedCluster, *,
                 serial: SerialConsole | None = DEFAULT_SERIAL, http_host: str | None = None,
                 export_ids: Mapping[str, int] | None = None) -> None:
        self.cluster = cluster
        s = cluster.settings
        host = http_host or str(s.server_address)
        self.http_base = f"http://{host}:{s.http_port}"
        self.boot_url = f"{self.http_base}/boot"
        self.report_url = f"{self.http_base}{REPORT_PATH}"
        self.serial = serial
        self.by_address = {r.node.address: name for name, r in cluster.nodes.items()}
        self.export_ids = assign_export_ids(self.export_keys(), export_ids or {})
        self._virtual_names: dict[str, tuple[str, str]] = {}
        for name, r in cluster.nodes.items():
            self._virtual_names[ipxe_filename(name)] = (name, "ipxe")
            for mac in r.node.macs:
                self._virtual_names[pxelinux_filename(mac)] = (name, "pxelinux")
                self._virtual_names[grub_filename(mac)] = (name, "grub")
        # Caches of this catalog alone: keyed by what the inventory names (never by what a
        # client sends), so each is bounded by the inventory, and dropped with the catalog.
        self._dhcp: dict[str, NodeBoot] = {}
        self._contexts: dict[str, NodeBootContext] = {}
        self._rendered: dict[tuple[str, str], bytes] = {}

    def export_keys(self) -> list[str]:
        c = self.cluster
        versions = [f"image:{export_name(i, v.number)}" for i in c.images.values()
                    for v in i.all_versions()]
        blocks = [BLOCKS_KEY] if block_images(c) else []
        return (versions + blocks + [f"node:{n}" for n in c.inventory.nodes]
                + [f"group:{n}" for n in c.groups if n in c.layer_groups])

    # -- per node --------------------------------------------------------------------------
    def node_for_mac(self, mac: MacAddress) -> ResolvedNode | None:
        return self.cluster.node_for_mac(mac)

    def dhcp_lookup(self, mac: MacAddress) -> NodeBoot | None:
        """What DHCP tells the node with `mac` (None: not in the inventory)."""
        r = self.node_for_mac(mac)
        if r is None:
            return None
        boot = self._dhcp.get(r.name)
        if boot is None:
            p = r.profile
            boot = self._dhcp[r.name] = NodeBoot(
                name=r.name, address=r.node.address,
                bios_file=BIOS_FILES[p.bios_loader], uefi_file=UEFI_FILES[p.uefi_loader],
                ipxe_url=f"{self.boot_url}/{ipxe_filename(r.name)}",
                bios_pxelinux=p.bios_loader is BiosLoader.PXELINUX,
            )
        return boot

    def node_context(self, name: str) -> NodeBootContext:
        ctx = self._contexts.get(name)
        if ctx is None:
            ctx = self._contexts[name] = self._node_context(self.cluster.nodes[name])
        return ctx

    def _node_context(self, r: ResolvedNode) -> NodeBootContext:
        p = r.profile
        kernel, initramfs = node_boot_files(r)
        return NodeBootContext(
            name=r.name, macs=r.node.macs, address=r.node.address,
            server_address=self.cluster.settings.server_address, boot_url=self.boot_url,
            kernel=kernel, initramfs=initramfs,
            root_spec=root_spec_text(self.cluster, r), runlevel=p.runlevel or None,
            init_system=r.image.init_system,
            kernel_args=(*storage_kernel_args(self.cluster.settings), *p.kernel_args),
            serial=self.serial, status_url=self.report_url,
        )

    def virtual_file(self, path: str) -> VirtualFile | None:
        """A per-node file rendered from the inventory, by its path in the boot tree."""
        path = path.lstrip("/")
        if path == "pxelinux.cfg/default":
            return VirtualFile(node=None, data=render_pxelinux_default(
                DefaultBootContext(serial=self.serial)).encode())
        hit = self._virtual_names.get(path)
        if hit is None:
            return None
        name, kind = hit
        return VirtualFile(node=name, data=self._render(name, kind),
                           image=self.cluster.nodes[name].image.ref)

    def _render(self, name: str, kind: str) -> bytes:
        data = self._rendered.get((name, kind))
        if data is None:
            ctx = self.node_context(name)
            render = {"ipxe": render_ipxe, "pxelinux": render_pxelinux,
                      "grub": render_grub}[kind]
            data = self._rendered[(name, kind)] = render(ctx).encode()
        return data

    # -- cluster wide ------------------------------------------------------------------------
    def exported_versions(self, running: Iterable[str] = ()) -> list[Image]:
        """The image versions to export: those nodes boot next, those `running` names
        (`NAME@N` nodes booted and still run), and the default image's latest."""
        c = self.cluster
        wanted = dict(c.versions_in_use())
        for ref in running:
            parsed = _ref_or_none(ref)
            image = c.images.get(parsed.name) if parsed is not None else None
            if parsed is None or image is None:
                continue
            # `NAME` was recorded before the image had versions: it is its version 1
            number = parsed.version or 1
            if any(v.number == number and v.complete for v in image.all_versions()):
                version = image.at(number)
                wanted.setdefault(version.ref, version)
        if "default" in c.images:
            default = c.images["default"].at(None)
            wanted.setdefault(default.ref, default)
        return sorted(wanted.values(), key=lambda i: (i.name, i.version or 0))

    def version_clients(self, image: Image, running: Iterable[str],
                        running_nodes: Mapping[str, str]) -> tuple[IPv4Address, ...]:
        """Who may mount version `image` (N ≥ 2): the nodes that boot it next or run it.
        Empty (= the subnet) for version 1 and unversioned images, and for a version named
        running without knowing by whom (no node in `running_nodes`)."""
        ref = image.ref
        if image.version is None or image.version < 2:
            return ()
        c = self.cluster
        users = {r.node.address for name, r in c.nodes.items()
                 if r.image.ref == ref or running_nodes.get(name) == ref}
        runs = {name for name, v in running_nodes.items() if v == ref and name in c.nodes}
        if ref in running and not runs:
            return ()
        return tuple(sorted(users))

    def cluster_context(self, *, nfs_protocols: tuple[int, ...] = (3, 4),
                        running: Iterable[str] = (),
                        readers: Mapping[str, tuple[IPv4Address, ...]] | None = None,
                        running_nodes: Mapping[str, str] | None = None) -> ClusterContext:
        """`readers`: node → more addresses that may read its layer (`lab try` canaries);
        `running_nodes`: node → the version it runs (`NAME@N`, from the boot events)."""
        readers = readers or {}
        c, s = self.cluster, self.cluster.settings
        running = list(running)
        images = tuple(
            ImageExport(name=export_name(img, img.version), path=img.root,
                        export_id=self.export_ids[f"image:{export_name(img, img.version)}"],
                        clients=self.version_clients(img, running, running_nodes or {}))
            for img in self.exported_versions(running)
        )
        if BLOCKS_KEY in self.export_ids and block_images(c):
            images += (ImageExport(name="blocks", path=s.block_dir, block=True,
                                   export_id=self.export_ids[BLOCKS_KEY]),)
        nodes = tuple(
            ClusterNode(
                name=name, macs=r.node.macs, address=r.node.address,
                export_path=(union_merged_dir(s, name) if r.profile.server_union
                             else s.diff_overlay_dir(name)),
                server_union=r.profile.server_union, read_only=r.profile.ephemeral,
                export_id=self.export_ids[f"node:{name}"],
                ipxe_script_url=f"{self.boot_url}/{ipxe_filename(name)}",
                bios_boot_file=BIOS_FILES[r.profile.bios_loader],
                uefi_boot_file=UEFI_FILES[r.profile.uefi_loader],
                # never a live server-side union: its canary reads a snapshot of the upper
                readers=() if r.profile.server_union else readers.get(name, ()),
            )
            for name, r in c.nodes.items()
        )
        group_layers = tuple(
            GroupLayerExport(
                name=gname, path=s.group_layer_dir(gname),
                export_id=self.export_ids[f"group:{gname}"],
                clients=tuple(r.node.address for r in c.nodes.values()
                              if gname in r.node.groups))
            for gname in sorted(c.layer_groups))
        return ClusterContext(settings=s, images=images, nodes=nodes,
                              group_layers=group_layers, nfs_protocols=nfs_protocols)


def network_config(inv: Inventory) -> NetworkConfig:
    """What serve's DHCP answers with (a `lab try` canary's private DHCP too)."""
    s = inv.settings
    pool = (s.pool_start, s.pool_end) if s.discovery and s.pool_start and s.pool_end else None
    # With ha_servers, a member's server id is its service address: a client's unicast RENEW
    # then reaches whoever holds it (a peer, after its death), not a dead host address.
    # Its peers' service addresses: it answers as them while it holds them (after their death).
    service = next((h.service for h in s.ha_servers if h.host == s.server_address), None)
    peers = tuple(h.service for h in s.ha_servers if h.service != service)
    network = NetworkConfig(server_address=s.server_address, subnet=s.subnet,
                            router=s.gateway, dns=s.dns, domain=s.domain,
                            lease_time=s.lease_time, mode=s.dhcp_mode, pool=pool,
                            server_id=service, peers=peers)
    # Relayed segments (setting relay_pools): their own subnet, router (the relay) and pool
    segments = tuple(dataclasses.replace(network, subnet=r.subnet, router=r.relay,
                                         pool=(r.first, r.last) if s.discovery else None,
                                         peers=()) for r in s.relay_pools)
    return dataclasses.replace(network, segments=segments) if segments else network
