"""The boot catalog: everything `oneroot serve` hands out, computed from one inventory.

Built once per inventory load; per-node files are rendered on first request and cached, so a
5,000-node cluster costs nothing until its nodes boot.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from oneroot.model.cluster import ResolvedNode, resolve
from oneroot.model.inventory import Inventory
from oneroot.net import MacAddress
from oneroot.ops.boot import node_image, root_spec_text, server_union, union_merged_dir
from oneroot.proto.dhcp import NodeBoot
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

BIOS_FILES = {"ipxe": "undionly.kpxe", "pxelinux": "pxelinux.0"}
UEFI_FILES = {"ipxe": "ipxe.efi", "snponly": "snponly.efi"}
REPORT_PATH = "/api/v1/report"
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


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualFile:
    node: str | None
    data: bytes


class BootCatalog:
    def __init__(self, inv: Inventory, *, serial: SerialConsole | None = DEFAULT_SERIAL,
                 http_host: str | None = None,
                 export_ids: Mapping[str, int] | None = None) -> None:
        self.inv = inv
        s = inv.settings
        host = http_host or str(s.server_address)
        self.http_base = f"http://{host}:{s.http_port}"
        self.boot_url = f"{self.http_base}/boot"
        self.report_url = f"{self.http_base}{REPORT_PATH}"
        self.serial = serial
        self.resolved: dict[str, ResolvedNode] = {
            name: resolve(node, inv.groups) for name, node in sorted(inv.nodes.items())
        }
        self.by_mac: dict[MacAddress, str] = {
            mac: node.name for node in inv.nodes.values() for mac in node.macs
        }
        self.by_address = {node.address: node.name for node in inv.nodes.values()}
        self.export_ids = assign_export_ids(self.export_keys(), export_ids or {})
        self._virtual_names: dict[str, tuple[str, str]] = {}
        for name, r in self.resolved.items():
            self._virtual_names[ipxe_filename(name)] = (name, "ipxe")
            for mac in r.node.macs:
                self._virtual_names[pxelinux_filename(mac)] = (name, "pxelinux")
                self._virtual_names[grub_filename(mac)] = (name, "grub")

    def export_keys(self) -> list[str]:
        inv = self.inv
        return ([f"image:{n}" for n in inv.images] + [f"node:{n}" for n in inv.nodes]
                + [f"group:{n}" for n, g in inv.groups.items()
                   if g.values.get("group_layer") is True])

    # -- per node --------------------------------------------------------------------------
    def node_for_mac(self, mac: MacAddress) -> ResolvedNode | None:
        name = self.by_mac.get(mac)
        return self.resolved[name] if name else None

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - per DHCP request; the catalog is immutable
    def dhcp_lookup(self, mac: MacAddress) -> NodeBoot | None:
        r = self.node_for_mac(mac)
        if r is None:
            return None
        return NodeBoot(
            name=r.node.name, address=r.node.address,
            bios_file=BIOS_FILES[r.text("bios_loader")],
            uefi_file=UEFI_FILES[r.text("uefi_loader")],
            ipxe_url=f"{self.boot_url}/{ipxe_filename(r.node.name)}",
            bios_pxelinux=r.text("bios_loader") == "pxelinux",
        )

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - the catalog lives as long as its inventory
    def node_context(self, name: str) -> NodeBootContext:
        r = self.resolved[name]
        image = node_image(self.inv, r)
        runlevel = r.text("runlevel") or None
        return NodeBootContext(
            name=name, macs=r.node.macs, address=r.node.address,
            server_address=self.inv.settings.server_address, boot_url=self.boot_url,
            kernel=r.text("kernel"), initramfs=r.text("initramfs"),
            root_spec=root_spec_text(self.inv, r), runlevel=runlevel,
            init_system=image.init_system, kernel_args=r.items("kernel_args"),
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
        return VirtualFile(node=name, data=self._render(name, kind))

    @functools.lru_cache(maxsize=8192)  # noqa: B019
    def _render(self, name: str, kind: str) -> bytes:
        ctx = self.node_context(name)
        text = {"ipxe": render_ipxe, "pxelinux": render_pxelinux, "grub": render_grub}[kind](ctx)
        return text.encode()

    # -- cluster wide ------------------------------------------------------------------------
    def cluster_context(self, *, nfs_protocols: tuple[int, ...] = (3, 4)) -> ClusterContext:
        inv, s = self.inv, self.inv.settings
        images = tuple(
            ImageExport(name=img.name, path=img.root,
                        export_id=self.export_ids[f"image:{img.name}"])
            for img in sorted(inv.images.values(), key=lambda i: i.name)
            if any(node_image(inv, r).name == img.name for r in self.resolved.values())
            or img.name == "default"
        )
        nodes = tuple(
            ClusterNode(
                name=name, macs=r.node.macs, address=r.node.address,
                export_path=(union_merged_dir(s, name) if server_union(r)
                             else PurePosixPath(str(s.diff_overlay_dir(name)))),
                server_union=server_union(r), read_only=r.flag("ephemeral"),
                export_id=self.export_ids[f"node:{name}"],
                ipxe_script_url=f"{self.boot_url}/{ipxe_filename(name)}",
                bios_boot_file=BIOS_FILES[r.text("bios_loader")],
                uefi_boot_file=UEFI_FILES[r.text("uefi_loader")],
            )
            for name, r in self.resolved.items()
        )
        group_layers = []
        for gname, group in sorted(inv.groups.items()):
            if group.values.get("group_layer") is True:
                clients = tuple(r.node.address for r in self.resolved.values()
                                if gname in r.node.groups)
                group_layers.append(GroupLayerExport(
                    name=gname, path=PurePosixPath(str(s.group_layer_dir(gname))),
                    export_id=self.export_ids[f"group:{gname}"], clients=clients))
        return ClusterContext(settings=s, images=images, nodes=nodes,
                              group_layers=tuple(group_layers), nfs_protocols=nfs_protocols)
