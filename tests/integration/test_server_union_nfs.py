"""The server-side union (DESIGN §3) with real overlayfs and nfs-ganesha on 127.0.0.1, seen
through the userspace NFSv4.0 client (libnfs-utils' `nfs-ls`/`nfs-cat`/`nfs-cp`, and libnfs
itself through ctypes for a REMOVE, which the tools lack).

node01 (127.0.0.1, the test's client) and node02 (127.0.0.2) are `union=server` nodes. node01
reads its merged tree (image < group layer < its own upper), writes a file and deletes an image
file through the export: the file lands in `upper/`, the deletion as a `c 0 0` whiteout. It is
refused node02's merged tree and its own raw directory (not exported in this mode). An overlay
edit and a boot remount go through unexport → remount → export while ganesha runs, and the
client reads on afterwards. Removing node02 unmounts its union. Needs root.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from oneroot.model import NfsServerKind
from oneroot.model.inventory import Inventory
from oneroot.model.paths import Paths
from oneroot.model.resolved import resolve_cluster
from oneroot.nfs.server_union import UnionUnsupported, mounted_unions
from oneroot.ops.nfs_serving import (
    ExportTarget,
    apply_nfs,
    ganesha_server,
    nfs_plan,
    remount_union_for_boot,
)
from oneroot.ops.overlays import archive_node_dir, put_file
from oneroot.testing import nfsclient
from oneroot.testing.inventory import layer_group, loopback_settings, make_inventory, make_node
from oneroot.testing.nfsclient import NfsClient
from oneroot.testing.ports import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts)"),
    pytest.mark.skipif(shutil.which("ganesha.nfsd") is None
                       or not nfsclient.available(libnfs=True),
                       reason="needs nfs-ganesha, nfs-ganesha-vfs and libnfs-utils"),
]

LOCAL = ipaddress.IPv4Address("127.0.0.1")


def _inventory(base: Path, *, nodes: tuple[str, ...] = ("node01", "node02"),
               image_root: Path | None = None) -> Inventory:
    every = {
        "node01": make_node(1, address=LOCAL, groups=("default", "compute"), union="server"),
        "node02": make_node(2, address="127.0.0.2", union="server"),
    }
    return make_inventory(nodes=[every[n] for n in nodes], groups=[layer_group("compute")],
                          settings=loopback_settings(base, nfs_server=NfsServerKind.GANESHA),
                          image_root=image_root or base / "image")


def _image(base: Path) -> None:
    etc = base / "image" / "etc"
    etc.mkdir(parents=True)
    (etc / "motd").write_text("image motd\n")
    (etc / "issue.net").write_text("image issue.net\n")
    (etc / "layered").write_text("image\n")
    (base / "groups" / "compute" / "etc").mkdir(parents=True)
    (base / "groups" / "compute" / "etc" / "layered").write_text("group\n")


def test_server_side_union_over_ganesha(base: Path) -> None:
    paths = Paths(home=base / "home")
    _image(base)
    inv = _inventory(base)
    port = free_port()
    client = NfsClient(port)
    merged = f"{base}/systems/node01/merged"
    upper = base / "systems/node01/upper"
    target = ExportTarget(bind=LOCAL, port=port)

    plan = nfs_plan(resolve_cluster(inv), paths, port=port)
    assert set(plan.unions) == {"node01", "node02"}
    apply_nfs(resolve_cluster(inv), paths, plan=plan)
    apply_nfs(resolve_cluster(inv), paths, plan=plan)  # idempotent: mounted once
    assert sorted(mounted_unions(base / "systems")) == ["node01", "node02"]
    assert f'Path = "{merged}";' in plan.text and f'Path = "{base}/systems/node01";' \
        not in plan.text

    server = ganesha_server(resolve_cluster(inv), paths, port=port)

    async def scenario() -> None:
        async with server:
            await asyncio.to_thread(_prove, client, base, inv, paths, target)
            # node02 goes: its export first, then its union; then its dir can be archived.
            inv2 = _inventory(base, nodes=("node01",))
            cluster2 = resolve_cluster(inv2)
            apply_nfs(cluster2, paths, plan=nfs_plan(cluster2, paths, port=port))
            assert sorted(mounted_unions(base / "systems")) == ["node01"]
            assert archive_node_dir(resolve_cluster(inv), paths, "node02") is not None
            assert client.read(f"{merged}/etc/motd") == "node01 motd\n"

    asyncio.run(scenario())
    assert upper.joinpath("written.txt").read_text() == "through nfs\n"


def _prove(client: NfsClient, base: Path, inv: Inventory, paths: Paths,
           target: ExportTarget) -> None:
    merged = f"{base}/systems/node01/merged"
    upper = base / "systems/node01/upper"
    # Layers in order: image < group < node; the node's identity is in its upper.
    assert client.read(f"{merged}/etc/motd") == "image motd\n"
    assert client.read(f"{merged}/etc/layered") == "group\n"
    assert client.read(f"{merged}/etc/hostname") == "node01\n"

    # A write through the export lands in upper/.
    local = base / "payload"
    local.write_text("through nfs\n")
    ok = client.copy_in(local, f"{merged}/written.txt")
    assert ok.returncode == 0, ok.stderr
    assert (upper / "written.txt").read_text() == "through nfs\n"

    # A deletion through the export is a `c 0 0` whiteout in upper/.
    client.remove(f"{merged}/etc/issue.net")
    st = os.lstat(upper / "etc" / "issue.net")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert "issue.net" not in client.names(f"{merged}/etc")
    assert (base / "image/etc/issue.net").exists()

    # Only node01's merged tree, to node01 alone: not node02's, not its raw directory.
    assert client.ls(f"{base}/systems/node02/merged").returncode != 0
    assert client.ls(f"{base}/systems/node01/upper").returncode != 0

    # An overlay edit while exported: the safe remount, the client reads on.
    put_file(resolve_cluster(inv), paths, "node01", "/etc/motd", io.BytesIO(b"node01 motd\n"))
    assert (upper / "etc" / "motd").read_text() == "node01 motd\n"
    assert client.read(f"{merged}/etc/motd") == "node01 motd\n"

    # The image changes; the node boots: its union is remounted and shows the change.
    (base / "image/etc/layered").unlink()
    (base / "image/etc/new-in-image").write_text("new\n")
    (base / "groups/compute/etc/layered").write_text("group v2\n")
    assert remount_union_for_boot(resolve_cluster(inv), paths, "node01", target) is True
    assert client.read(f"{merged}/etc/new-in-image") == "new\n"
    assert client.read(f"{merged}/etc/layered") == "group v2\n"
    assert "issue.net" not in client.names(f"{merged}/etc")
    assert not remount_union_for_boot(resolve_cluster(inv), paths, "nobody-such", target)


def test_refused_over_the_live_root(base: Path) -> None:
    inv = _inventory(base, image_root=Path("/"))
    with pytest.raises(UnionUnsupported, match="live `/`") as info:
        nfs_plan(resolve_cluster(inv), Paths(home=base / "home"))
    assert info.value.hint and "union=client" in info.value.hint


def test_remount_picks_up_new_group_layers(base: Path) -> None:
    """A node that joins a group is remounted over the new layer list (index=on would refuse
    the new lowers without clearing the recorded origin)."""
    paths = Paths(home=base / "home")
    _image(base)
    inv = _inventory(base, nodes=("node02",))
    apply_nfs(resolve_cluster(inv), paths)
    assert (base / "systems/node02/merged/etc/layered").read_text() == "image\n"
    joined = make_node(2, address="127.0.0.2", groups=("default", "compute"), union="server")
    inv2 = Inventory(settings=inv.settings, nodes={"node02": joined}, groups=inv.groups,
                     images=inv.images)
    # mounted over the old layers: left for the node's next boot
    apply_nfs(resolve_cluster(inv2), paths)
    assert (base / "systems/node02/merged/etc/layered").read_text() == "image\n"
    assert remount_union_for_boot(resolve_cluster(inv2), paths, "node02")
    assert (base / "systems/node02/merged/etc/layered").read_text() == "group\n"
    with contextlib.suppress(Exception):
        subprocess.run(["umount", str(base / "systems/node02/merged")], check=True)


def test_remount_waits_for_a_copy_in_another_mount_namespace(base: Path) -> None:
    """A process that made a private mount namespace while the union was mounted (another
    job's `unshare -m` or `ip netns exec` on a shared machine) keeps a copy of it, and with it
    the upper dir "in use": overlayfs refuses the remount until that process is gone. The
    remount waits for it (this failed as "upperdir is in-use" under load before)."""
    paths = Paths(home=base / "home")
    _image(base)
    inv = _inventory(base, nodes=("node02",))
    apply_nfs(resolve_cluster(inv), paths)
    holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sleep", "3"])
    try:
        mounts = Path(f"/proc/{holder.pid}/mounts")
        deadline = time.monotonic() + 30
        while "oneroot-union-node02" not in (mounts.read_text() if mounts.exists() else ""):
            assert time.monotonic() < deadline, "the namespace never got its copy"
            time.sleep(0.05)
        assert remount_union_for_boot(resolve_cluster(inv), paths, "node02")
        assert holder.poll() is not None  # the remount went through only once it had gone
    finally:
        holder.kill()
        holder.wait()
    assert (base / "systems/node02/merged/etc/layered").read_text() == "image\n"
    with contextlib.suppress(Exception):
        subprocess.run(["umount", str(base / "systems/node02/merged")], check=True)
