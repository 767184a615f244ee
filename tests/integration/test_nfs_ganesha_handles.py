"""Forged file handles against nfs-ganesha (issue 11 item 4, the ganesha half): the real
ganesha in oneroot's layout on loopback, node01 (127.0.0.1) as the attacker speaking NFSv4
itself (`oneroot.testing.nfs4raw`), handles made the way ganesha's FSAL_VFS makes them.

ganesha checks a handle's export id against the client and its fsid against the export's
filesystems, and nothing else: it has no subtree check (`nfs4raw`'s docstring). So every
object on a filesystem that holds an export of the attacker's is reachable through that
export. The defence is `layer_fs=own` (the default, `oneroot.ops.layerfs`): each node's layer
a filesystem of its own, so a handle through node01's export names node01's layer only, and
node02's filesystem id is refused. `layer_fs=shared` is the same attack without the defence:
`SHARED_GAP` answers there, which shows the test fails when the defence is off.
`KNOWN_VIEW_GAP` is open in both: non-directories of the view's lower filesystem through the
view (overlayfs decodes lower handles without a path check; the view's index whiteouts stop
a masked file's handle only in the exact bytes the kernel writes; docs/security.md). The
files here are 0644: the view's `all_squash`, which refuses such a handle's READ for a file
others may not read, is tested in test_nfs_ganesha_view_squash.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import pytest

from oneroot.model import Image, LayerFs, NfsServerKind
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster, resolve_cluster
from oneroot.nfs import unmount_view
from oneroot.ops.imagefs import XFS, images_root, is_images_fs
from oneroot.ops.layerfs import is_layer_fs, unmount_layer_fs
from oneroot.ops.nfs_serving import (
    NfsPlan,
    apply_nfs,
    ganesha_files,
    ganesha_server,
    nfs_plan,
)
from oneroot.testing.inventory import loopback_settings, make_inventory, make_node
from oneroot.testing.nfs4raw import (
    GETATTR_BITS,
    OP_GETATTR,
    OP_PUTFH,
    Nfs4,
    ganesha_handle,
    kernel_handle,
)
from oneroot.testing.oncrpc import opaque
from oneroot.testing.ports import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts)"),
    pytest.mark.skipif(shutil.which("ganesha.nfsd") is None, reason="needs nfs-ganesha"),
]

FILES = {"etc/passwd": "public\n", "etc/shadow": "secret shadow\n", "usr/bin/tool": "tool\n",
         "var/state/systems/node02/upper/etc/node02-secret": "secret of node02\n"}
# Answered with layer_fs=shared (docs/security.md, "Forged file handles"): the filesystem
# holding node01's export is open to node01 through it, node02's layer included.
SHARED_GAP = {"ino2_own", "shadow_own", "outside_own", "node02_dir_own", "node02_secret_own",
              "node02_dir_fsid02", "node02_secret_fsid02", "node02_secret_view_ovl_flag",
              "node02_secret_view_ovl_longer"}
# With layer_fs=own these name inode 2 of node01's own filesystem: its own export's root
# (checked: the same attributes as `own_root`).
OWN_ROOT_ALIASES = {"ino2_own", "node02_dir_own"}
# Open with either, through the view (overlayfs decodes lower non-directories without a path
# check): a file of the lower's filesystem outside the view's directory (no mask to block),
# and a masked file whose handle is written otherwise than the kernel writes it (the index
# whiteouts of `nfs.viewhandles` block `shadow_view_ovl` itself only).
# Reached through an image's export with layer_fs=own too: the images filesystem holds every
# image and version of HOME/images (one filesystem: versions are hardlink farms).
IMAGES_FS_REACH = {"other_image"}
KNOWN_VIEW_GAP = {"outside_view_ovl", "outside_view_ovl_flag", "outside_view_ovl_longer",
                  "shadow_view_ovl_flag", "shadow_view_ovl_longer"}


@pytest.fixture
def server_root() -> Iterator[Path]:
    # On / itself, not a tmpfs: the view's lower needs xattrs (as test_nfs_view_secrets).
    base = Path("/var/tmp") / f"oneroot-handles-{os.getpid()}"
    for rel, text in FILES.items():
        (base / "root" / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / "root" / rel).write_text(text)
    (base / "outside-secret").write_text("outside every export\n")
    try:
        yield base / "root"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _cluster(root: Path, layer_fs: LayerFs) -> ResolvedCluster:
    return resolve_cluster(make_inventory(
        nodes=[make_node(1, address="127.0.0.1"), make_node(2, address="127.0.0.2")],
        settings=loopback_settings(root / "var/state", nfs_server=NfsServerKind.GANESHA,
                                   layer_fs=layer_fs),
        image_root=root))


def _forge(client: Nfs4, root: Path, export_ids: dict[str, int],
           node02_root: bytes) -> dict[str, bytes]:
    """node01's own handles from GETFH, and the forged ones built on them. `node02_root` is
    node02's own root handle (what a leak of one of its handles gives away: its fsid)."""
    own = client.handle_of(f"{root}/var/state/systems/node01")
    passwd = client.handle_of(f"{root}/etc/passwd")  # through the view (its pseudo path)
    ovl_type, ovl = passwd[6 + 8], passwd[6 + 8 + 1:]  # after header, VFS flags, fsid
    assert ovl_type == 0xF8, passwd.hex()  # overlayfs's handle; its last 8 bytes: ext4's
    leaked = {"shadow": root / "etc/shadow", "outside": root.parent / "outside-secret",
              "node02_dir": root / "var/state/systems/node02",
              "node02_secret": root / "var/state/systems/node02/upper/etc/node02-secret"}
    handles = {"own_root": own, "passwd_view_ovl": passwd,
               "ino2_own": ganesha_handle(own, 1, struct.pack("<II", 2, 0))}
    for name, path in leaked.items():
        kind, fid = kernel_handle(path)  # what a leaked handle carries
        handles[f"{name}_own"] = ganesha_handle(own, kind, fid)
        handles[f"{name}_view"] = ganesha_handle(passwd, kind, fid)
        handles[f"{name}_node02"] = ganesha_handle(own, kind, fid,
                                                   export_id=export_ids["node02"])
        if kind == 1 and name != "node02_dir":
            fh = ovl[:-8] + fid  # 3 bytes of padding, then overlayfs's ovl_fb
            handles[f"{name}_view_ovl"] = ganesha_handle(passwd, ovl_type, fh)
            # The same file, named otherwise: the view's index whiteouts
            # (`nfs.viewhandles`) are looked up by the handle's bytes. ANY_ENDIAN in flags:
            handles[f"{name}_view_ovl_flag"] = ganesha_handle(
                passwd, ovl_type, fh[:6] + bytes([fh[6] | 2]) + fh[7:])
            # four bytes past the ext4 handle (fb.len + 4; ext4 ignores them):
            handles[f"{name}_view_ovl_longer"] = ganesha_handle(
                passwd, ovl_type, fh[:5] + bytes([fh[5] + 4]) + fh[6:] + bytes(4))
        if name.startswith("node02"):  # node02's filesystem id, node01's export id
            handles[f"{name}_fsid02"] = ganesha_handle(node02_root, kind, fid,
                                                       export_id=export_ids["node01"])
    return handles


def _attack_under_ganesha(cluster: ResolvedCluster, paths: Paths, plan: NfsPlan, port: int,
                          attack: Callable[[], dict[str, dict[str, int]]],
                          layers: tuple[Path, ...] = ()) -> dict[str, dict[str, int]]:
    """Apply PLAN, run ATTACK (a blocking client) while ganesha serves it, then unmount the
    views, LAYERS' filesystems and the images filesystem whatever happened."""
    async def scenario() -> dict[str, dict[str, int]]:
        async with ganesha_server(cluster, paths, port=port):
            return await asyncio.to_thread(attack)

    try:
        apply_nfs(cluster, paths, plan=plan)
        return asyncio.run(scenario())
    finally:
        for spec in plan.views.values():
            with contextlib.suppress(Exception):
                unmount_view(spec)
        for layer in layers:
            unmount_layer_fs(layer)
        unmount_layer_fs(images_root(paths), XFS)


@pytest.mark.parametrize("layer_fs", [LayerFs.OWN, LayerFs.SHARED])
def test_forged_handles_against_ganesha(server_root: Path, layer_fs: LayerFs) -> None:
    cluster = _cluster(server_root, layer_fs)
    paths = Paths(home=server_root / "var/lib/oneroot")
    port = free_port()
    plan = nfs_plan(cluster, paths, port=port)
    export_ids = {key.split(":")[-1]: number for key, number in plan.export_ids.items()}

    attrs: dict[str, bytes] = {}

    def attack() -> dict[str, dict[str, int]]:
        node02 = Nfs4("127.0.0.1", port, source="127.0.0.2")
        node02_root = node02.handle_of(f"{server_root}/var/state/systems/node02")
        client = Nfs4("127.0.0.1", port)
        handles = _forge(client, server_root, export_ids, node02_root)
        for name in OWN_ROOT_ALIASES | {"own_root"}:  # type, size, fileid
            attrs[name] = client.compound(struct.pack(">I", OP_PUTFH) + opaque(handles[name]),
                                          struct.pack(">I", OP_GETATTR) + GETATTR_BITS)[1]
        return {name: client.probe(fh) for name, fh in handles.items()}

    results = _attack_under_ganesha(
        cluster, paths, plan, port, attack,
        layers=tuple(server_root / "var/state/systems" / n for n in ("node01", "node02")))
    print(results)
    answered = {name for name, procs in results.items() if 0 in procs.values()}
    # The controls: node01's own export and a file the view shows, by their real handles.
    assert results["own_root"]["readdir"] == 0 and results["passwd_view_ovl"]["read"] == 0
    # Refused: another node's export id, ext4 handles through the view.
    assert not {n for n in answered if n.endswith(("_node02", "_view"))}
    if layer_fs is LayerFs.SHARED:  # the defence off: the whole filesystem is open
        assert answered == {"own_root", "passwd_view_ovl"} | SHARED_GAP | KNOWN_VIEW_GAP
        return
    assert answered == {"own_root", "passwd_view_ovl"} | OWN_ROOT_ALIASES | KNOWN_VIEW_GAP
    assert {attrs[name] for name in OWN_ROOT_ALIASES} == {attrs["own_root"]}


@pytest.mark.parametrize("layer_fs", [LayerFs.OWN, LayerFs.SHARED])
def test_an_image_exported_as_it_is_keeps_to_the_images_filesystem(
        server_root: Path, layer_fs: LayerFs) -> None:
    """An image that is not the server's `/` is exported as it is (no view): its export holds
    the filesystem the image lives on. With layer_fs=own, `HOME/images` is a filesystem of
    its own (`ops.imagefs`, made and filled by `nfs apply`): node03, which boots image
    `plain` (in HOME/images, as `image import` puts it), forges handles through it to the
    shadow file and a file outside every export: refused. The other images in that
    filesystem stay reachable (`IMAGES_FS_REACH`: all exported read-only anyway).
    `[shared]` is the same attack with the defence off: all read.

    The layout of a real install: HOME inside the server's `/` (the default image, exported
    through its masked view, which empties HOME but for a junction per export inside it):
    ganesha starts and node03 reads the view too (`view_passwd`)."""
    paths = Paths(home=server_root / "var/lib/oneroot")
    plain, other = images_root(paths) / "plain", images_root(paths) / "other"
    (plain / "etc").mkdir(parents=True)
    (plain / "etc/passwd").write_text("plain\n")
    other.mkdir()
    (other / "file").write_text("another image\n")
    cluster = resolve_cluster(make_inventory(
        nodes=[make_node(3, address="127.0.0.3", image="plain")],
        images=[Image(name="plain", root=PurePosixPath(plain))],
        settings=loopback_settings(server_root / "var/state", nfs_server=NfsServerKind.GANESHA,
                                   layer_fs=layer_fs),
        image_root=server_root))
    port = free_port()
    plan = nfs_plan(cluster, paths, port=port)
    assert "plain" not in plan.views  # exported as it is
    leaked = {"shadow": server_root / "etc/shadow",
              "outside": server_root.parent / "outside-secret"}

    def attack() -> dict[str, dict[str, int]]:
        assert is_images_fs(paths) is (layer_fs is LayerFs.OWN)  # made by apply_nfs
        client = Nfs4("127.0.0.1", port, source="127.0.0.3")
        image = client.handle_of(f"{plain}/etc/passwd")
        handles = {"passwd": image, "view_passwd": client.handle_of(f"{server_root}/etc/passwd")}
        for name, path in {**leaked, "other_image": other / "file"}.items():
            handles[name] = ganesha_handle(image, *kernel_handle(path))
        return {name: client.probe(fh) for name, fh in handles.items()}

    results = _attack_under_ganesha(cluster, paths, plan, port, attack,
                                    layers=(server_root / "var/state/systems/node03",))
    print(results)
    answered = {name for name, procs in results.items() if procs["read"] == 0}
    if layer_fs is LayerFs.SHARED:  # the defence off: the image's whole filesystem is open
        assert answered == {"passwd", "view_passwd", *leaked, *IMAGES_FS_REACH}
        return
    assert answered == {"passwd", "view_passwd", *IMAGES_FS_REACH}


def test_a_node_added_while_ganesha_runs_gets_its_own_filesystem(server_root: Path) -> None:
    """`node add` while `oneroot serve` runs: the re-apply mounts the new layer before the
    SIGHUP, ganesha claims it as the export's filesystem, and the new node's forged handles
    stay inside it."""
    def cluster(*nodes: int) -> ResolvedCluster:
        return resolve_cluster(make_inventory(
            nodes=[make_node(i, address=f"127.0.0.{i}") for i in nodes],
            settings=loopback_settings(server_root / "var/state", layer_fs=LayerFs.OWN,
                                       nfs_server=NfsServerKind.GANESHA),
            image_root=server_root))

    paths = Paths(home=server_root / "var/lib/oneroot")
    port = free_port()
    before, after = cluster(1), cluster(1, 3)
    layer = server_root / "var/state/systems/node03"

    def attack() -> dict[str, dict[str, int]]:
        log = ganesha_files(paths).log
        offset = log.stat().st_size
        apply_nfs(after, paths, plan=nfs_plan(after, paths, port=port))
        assert is_layer_fs(layer)
        deadline = time.monotonic() + 30
        while b"Reread exports complete" not in log.read_bytes()[offset:]:
            assert time.monotonic() < deadline, "ganesha did not re-read its exports"
            time.sleep(0.1)
        client = Nfs4("127.0.0.1", port, source="127.0.0.3")
        own = client.handle_of(str(layer))
        kind, fid = kernel_handle(server_root.parent / "outside-secret")
        return {"own": client.probe(own),
                "ino2": client.probe(ganesha_handle(own, 1, struct.pack("<II", 2, 0))),
                "outside": client.probe(ganesha_handle(own, kind, fid))}

    plan = nfs_plan(before, paths, port=port)
    results = _attack_under_ganesha(
        before, paths, plan, port, attack,
        layers=tuple(server_root / "var/state/systems" / n for n in ("node01", "node03")))
    print(results)
    assert results["own"]["readdir"] == 0 and results["ino2"]["readdir"] == 0  # its own root
    assert 0 not in results["outside"].values()
