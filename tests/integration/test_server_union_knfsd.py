"""The kernel-nfsd path of the server-side union with real overlayfs unions: every export that
is an overlayfs mount carries `fsid=` (knfsd cannot derive a filesystem id for one), the id is
the export's persisted export id, and it survives the unexport → remount → export dance. A
stand-in `exportfs` records its calls: no nfsd is started or touched. Needs root (mounts).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from oneroot.model import NfsServerKind
from oneroot.model.inventory import Inventory
from oneroot.model.paths import Paths
from oneroot.model.resolved import resolve_cluster
from oneroot.nfs.server_union import mounted_unions
from oneroot.nfs.view import read_mounts
from oneroot.ops.exportids import load_export_ids
from oneroot.ops.nfs_serving import ExportTarget, apply_nfs, remount_union_for_boot
from oneroot.testing.inventory import LOOPBACK as LOCAL
from oneroot.testing.inventory import loopback_settings, make_inventory, make_node

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts)"),
]


def _inventory(base: Path) -> Inventory:
    """node01 is a `union=server` node, node02 a client-mode one."""
    return make_inventory(
        nodes=[make_node(1, address=LOCAL, union="server"), make_node(2, address="127.0.0.2")],
        settings=loopback_settings(base, nfs_server=NfsServerKind.KNFSD),
        image_root=base / "image")


def _options(exports: Path) -> dict[str, str]:
    out = {}
    for line in exports.read_text().splitlines():
        if line and not line.startswith("#"):
            path, first = line.split(" ")[:2]
            out[path] = first[first.index("(") + 1:-1]
    return out


def test_overlay_exports_carry_their_export_id_as_fsid(base: Path) -> None:
    (base / "image" / "etc").mkdir(parents=True)
    (base / "image" / "etc" / "motd").write_text("image\n")
    paths = Paths(home=base / "home")
    calls = base / "calls"
    exportfs = base / "exportfs"
    exportfs.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    exportfs.chmod(0o755)
    exports = base / "exports.d" / "oneroot.exports"
    inv = _inventory(base)

    result = apply_nfs(resolve_cluster(inv), paths, exportfs=str(exportfs), exports_file=exports)
    assert result.applied == "exportfs -ra"
    merged = base / "systems" / "node01" / "merged"
    assert sorted(mounted_unions(base / "systems")) == ["node01"]
    assert (merged / "etc" / "motd").read_text() == "image\n"

    ids = load_export_ids(paths)  # saved before the server saw them
    options = _options(exports)
    assert options[str(merged)].endswith(f",fsid={ids['node:node01']}")
    assert "fsid" not in options[str(base / "systems" / "node02")]
    overlays = {str(m.mount_point) for m in read_mounts() if m.fstype == "overlay"}
    assert {p for p in options if p in overlays} == {str(merged)}
    assert all("fsid=" in options[p] for p in options if p in overlays)

    # The remount around a boot unexports, remounts and exports again: the same fsid.
    target = ExportTarget(exportfs=str(exportfs), exports_file=exports)
    text = exports.read_text()
    assert remount_union_for_boot(resolve_cluster(inv), paths, "node01", target)
    assert exports.read_text() == text
    assert calls.read_text().splitlines() == ["-ra"] * 3
    assert load_export_ids(paths) == ids
