"""`oneroot render`: write the boot tree and the NFS/DHCP configs, changing only what changed.

Each file's inputs (its render context and the templates) are hashed into a manifest beside the
tree; a file whose inputs and bytes on disk are unchanged is not rendered again, so a one-node
change in a 5,000-node inventory renders one node's files.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from oneroot.fsutil import write_atomic, write_if_changed
from oneroot.ops.catalog import BootCatalog
from oneroot.render.boot import (
    grub_filename,
    ipxe_filename,
    pxelinux_filename,
    render_grub,
    render_ipxe,
    render_pxelinux,
    render_pxelinux_default,
)
from oneroot.render.cluster import render_dnsmasq
from oneroot.render.context import DefaultBootContext

MANIFEST = ".oneroot-render.json"


@dataclass(slots=True)
class RenderReport:
    written: list[str] = field(default_factory=list)
    unchanged: int = 0
    rendered: int = 0
    removed: list[str] = field(default_factory=list)


def _templates_digest() -> str:
    h = hashlib.sha256()
    folder = resources.files("oneroot.render").joinpath("templates")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        h.update(entry.name.encode() + b"\0" + entry.read_bytes())
    return h.hexdigest()


def _key(template_digest: str, kind: str, ctx: object) -> str:
    return hashlib.sha256(f"{template_digest}\0{kind}\0{ctx!r}".encode()).hexdigest()[:32]


def _file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:32]
    except OSError:
        return None


def render_tree(catalog: BootCatalog, boot_out: Path, config_out: Path,
                *, nfs_configs: Mapping[str, str],
                progress: Callable[[int, int], None] | None = None) -> RenderReport:
    """Render every file; `progress(done, total)` is called per node. `nfs_configs` (file
    name → text) are the NFS configs as the NFS server gets them
    (`ops.nfs_serving.rendered_configs`): written here, never rendered a second way."""
    report = RenderReport()
    total = len(catalog.cluster.nodes)
    digest = _templates_digest()
    manifest_path = boot_out / MANIFEST
    try:
        old: dict[str, dict[str, str]] = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        old = {}
    new: dict[str, dict[str, str]] = {}

    def emit(root: Path, rel: str, kind: str, ctx: object, render: Callable[[], str]) -> None:
        path = root / rel
        key = _key(digest, kind, ctx)
        entry_id = str(path)
        prev = old.get(entry_id)
        if prev and prev["key"] == key and _file_digest(path) == prev["sha"]:
            new[entry_id] = prev
            report.unchanged += 1
            return
        data = render().encode()
        report.rendered += 1
        if write_if_changed(path, data):
            report.written.append(entry_id)
        else:
            report.unchanged += 1
        new[entry_id] = {"key": key, "sha": hashlib.sha256(data).hexdigest()[:32]}

    default_ctx = DefaultBootContext(serial=catalog.serial)
    emit(boot_out, "pxelinux.cfg/default", "pxelinux-default", default_ctx,
         lambda: render_pxelinux_default(default_ctx))
    for done, (name, r) in enumerate(catalog.cluster.nodes.items()):
        if progress is not None and done % 64 == 0:
            progress(done, total)
        ctx = catalog.node_context(name)
        emit(boot_out, ipxe_filename(name), "ipxe", ctx, functools.partial(render_ipxe, ctx))
        for mac in r.node.macs:
            emit(boot_out, pxelinux_filename(mac), "pxelinux", ctx,
                 functools.partial(render_pxelinux, ctx))
            emit(boot_out, grub_filename(mac), "grub", ctx, functools.partial(render_grub, ctx))
    if progress is not None:
        progress(total, total)
    for file, text in sorted(nfs_configs.items()):
        emit(config_out, file, "nfs", text, functools.partial(str, text))
    cluster = catalog.cluster_context()
    emit(config_out, "dnsmasq.conf", "dnsmasq", cluster, lambda: render_dnsmasq(cluster))

    # Files of nodes that left the inventory go too (only files this tree wrote).
    for stale in sorted(set(old) - set(new)):
        try:
            os.unlink(stale)
            report.removed.append(stale)
        except FileNotFoundError:
            pass
    write_atomic(manifest_path, json.dumps(new, sort_keys=True).encode())
    return report
