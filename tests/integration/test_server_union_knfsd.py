"""The kernel-nfsd path of the server-side union with real overlayfs unions: every export that
is an overlayfs mount carries `fsid=` (knfsd cannot derive a filesystem id for one), the id is
the export's persisted export id, and it survives the unexport → remount → export dance. A
stand-in `exportfs` records its calls: no nfsd is started or touched. Needs root (mounts).
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest

from oneroot.errors import ExternalToolError
from oneroot.inventory import database
from oneroot.inventory.events import EventStore
from oneroot.model import NfsServerKind
from oneroot.model.events import BootEvent
from oneroot.model.inventory import Inventory
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster, resolve_cluster
from oneroot.nfs import server_union
from oneroot.nfs.server_union import mounted_unions
from oneroot.nfs.view import read_mounts
from oneroot.ops.exportids import load_export_ids
from oneroot.ops.layerfs import ensure_layer_fs, is_layer_fs
from oneroot.ops.nfs_serving import ExportTarget, apply_nfs, remount_union_for_boot
from oneroot.ops.server_union import node_union_spec
from oneroot.testing.inventory import LOOPBACK as LOCAL
from oneroot.testing.inventory import loopback_settings, make_inventory, make_node
from oneroot.testing.wait import until

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


def _stand_in(base: Path) -> ExportTarget:
    """An image (a filesystem of its own, as a union's image must be with knfsd:
    `ops.union_fs`), and an `exportfs` that records its calls in `base/calls`."""
    ensure_layer_fs(base / "image", size=256 << 20)  # ext4: overlayfs wants its UUID
    (base / "image" / "etc").mkdir()
    (base / "image" / "etc" / "motd").write_text("image\n")
    exportfs = base / "exportfs"
    exportfs.write_text(f'#!/bin/sh\necho "$*" >> {base / "calls"}\n')
    exportfs.chmod(0o755)
    return ExportTarget(exportfs=str(exportfs), exports_file=base / "exports.d/oneroot.exports")


def test_overlay_exports_carry_their_export_id_as_fsid(base: Path) -> None:
    paths = Paths(home=base / "home")
    calls = base / "calls"
    target = _stand_in(base)
    exports = target.exports_file
    assert exports is not None
    inv = _inventory(base)

    result = apply_nfs(resolve_cluster(inv), paths, exportfs=target.exportfs,
                       exports_file=exports)
    assert result.applied == "exportfs -ra"
    merged = base / "systems" / "node01" / "merged"
    assert sorted(mounted_unions(base / "systems")) == ["node01"]
    assert (merged / "etc" / "motd").read_text() == "image\n"

    # a union node's layer is a filesystem of its own (ops.union_fs); a client-mode node's not
    assert is_layer_fs(base / "systems" / "node01")
    assert not is_layer_fs(base / "systems" / "node02")
    ids = load_export_ids(paths)  # saved before the server saw them
    options = _options(exports)
    assert options[str(merged)].endswith(f",fsid={ids['node:node01']}")
    assert "fsid" not in options[str(base / "systems" / "node02")]
    overlays = {str(m.mount_point) for m in read_mounts() if m.fstype == "overlay"}
    assert {p for p in options if p in overlays} == {str(merged)}
    assert all("fsid=" in options[p] for p in options if p in overlays)

    # The remount around a boot unexports, remounts and exports again: the same fsid.
    text = exports.read_text()
    assert remount_union_for_boot(resolve_cluster(inv), paths, "node01", target)
    assert exports.read_text() == text
    assert calls.read_text().splitlines() == ["-ra"] * 3
    assert load_export_ids(paths) == ids


def test_a_remount_that_gives_up_names_the_process_holding_the_union(
        base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that made a private mount namespace while the union was mounted (another
    job's `unshare -m` or `ip netns exec` on a shared machine) keeps its upper dir in use
    after our unmount; the remount waits `BUSY_TIMEOUT` for it (test_server_union_nfs), then
    gives up. It failed so once under load ("already mounted or mount point busy") with no
    word of who held it: the error names the process now. Once it is gone, apply mounts and
    exports the union again."""
    paths = Paths(home=base / "home")
    target = _stand_in(base)
    cluster = resolve_cluster(_inventory(base))
    apply_nfs(cluster, paths, exportfs=target.exportfs, exports_file=target.exports_file)
    merged = base / "systems" / "node01" / "merged"
    holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sleep", "120"])
    try:
        mountinfo = Path(f"/proc/{holder.pid}/mountinfo")
        until(lambda: f" {merged} " in mountinfo.read_text(), "the namespace's copy of the "
              "union", 60, mountinfo.read_text)
        monkeypatch.setattr(server_union, "BUSY_TIMEOUT", 1.0)
        with pytest.raises(ExternalToolError, match="busy") as refused:
            remount_union_for_boot(cluster, paths, "node01", target)
        hint = refused.value.hint or ""
        assert "its last mount lives on in the mount namespace of process " in hint
        # the holder (unless more than 3 jobs on a shared machine copied the union too)
        holders = server_union.union_holders(node_union_spec(cluster, "node01"), limit=100)
        assert f"{holder.pid} (sleep)" in hint or len(holders) > 3, (hint, holders)
        assert "node01" not in mounted_unions(base / "systems")  # and not exported meanwhile
        assert str(merged) not in target.exports_file.read_text()
    finally:
        holder.kill()
        holder.wait()
    until(lambda: _remounted(cluster, paths, target), "the union mounted again", 60,
          lambda: str(mounted_unions(base / "systems")))
    assert str(merged) in target.exports_file.read_text()


def _remounted(cluster: ResolvedCluster, paths: Paths, target: ExportTarget) -> bool:
    """`oneroot nfs apply` (the holder's superblock may take a moment to go)."""
    try:
        apply_nfs(cluster, paths, exportfs=target.exportfs, exports_file=target.exports_file)
    except ExternalToolError:
        return False
    return True


def test_a_boot_remount_that_turns_exports_subtree_check_names_the_running_nodes(
        base: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The remount around node01's boot writes the exports anew, as `nfs apply` does. Where
    they were applied `no_subtree_check` (an older oneroot), node02, running, holds handles
    that go stale: serve logs `nfs.must_reboot` for it, as it does after `nfs apply`."""
    paths = Paths(home=base / "home")
    target = _stand_in(base)
    exports = target.exports_file
    cluster = resolve_cluster(_inventory(base))
    apply_nfs(cluster, paths, exportfs=target.exportfs, exports_file=exports)
    checked = exports.read_text()
    assert checked.count(",subtree_check") == 1  # node02's layer (the image: its own fs)
    exports.write_text(checked.replace(",subtree_check", ",no_subtree_check"))
    paths.home.mkdir(parents=True, exist_ok=True)
    events = EventStore(database.locate(paths, paths.events_db))
    try:
        events.record([BootEvent(time=1.0, kind="stage", node="node02", stage="runlevel")])
    finally:
        events.close()
    with caplog.at_level(logging.WARNING, logger="oneroot"):
        assert remount_union_for_boot(cluster, paths, "node01", target)
    assert exports.read_text() == checked
    said = [r.getMessage() for r in caplog.records if "nfs.must_reboot" in r.getMessage()]
    assert said == [f"nfs.must_reboot node=node02 exports={base / 'systems' / 'node02'} "
                    "reason=subtree_check now: the file handles it got before go stale"]


def test_a_mounted_union_on_a_shared_layer_moves_to_a_filesystem_of_its_own(
        base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A union node whose layer an older oneroot made as a directory of the state filesystem,
    its union mounted and exported: `nfs apply` unexports it, unmounts it, moves the layer
    into its own filesystem (the node's files kept, overlayfs's records of the old one
    dropped) and mounts and exports it again."""
    from oneroot.ops import nfs_serving, nodes_fs

    paths = Paths(home=base / "home")
    target = _stand_in(base)
    cluster = resolve_cluster(_inventory(base))
    layer = base / "systems" / "node01"
    with monkeypatch.context() as m:  # the layout before ops.union_fs
        m.setattr(nodes_fs, "owns_layer_fs", lambda _s, *, union: False)
        m.setattr(nfs_serving, "check_union_layers", lambda *_a, **_k: None)
        apply_nfs(cluster, paths, exportfs=target.exportfs, exports_file=target.exports_file)
    assert not is_layer_fs(layer) and "node01" in mounted_unions(base / "systems")
    merged = layer / "merged"
    (merged / "etc" / "kept").write_text("written before\n")
    (merged / "etc" / "motd").write_text("changed\n")  # copied up: an origin, an index entry
    assert os.listdir(layer / "work" / "index")

    apply_nfs(cluster, paths, exportfs=target.exportfs, exports_file=target.exports_file)
    assert is_layer_fs(layer) and "node01" in mounted_unions(base / "systems")
    assert (merged / "etc" / "kept").read_text() == "written before\n"
    assert (merged / "etc" / "motd").read_text() == "changed\n"
    calls = (base / "calls").read_text().splitlines()
    assert calls == ["-ra"] * 3  # applied, unexported for the move, applied again
