"""The masked view exported `all_squash` (docs/security.md, "Forged file handles"), proved
against the real nfs-ganesha on loopback: node01 (127.0.0.1) forges overlayfs handles of a
masked 0600 `/etc/shadow` in the spellings the view's index whiteouts miss (`ANY_ENDIAN` in
the flags, 4 bytes appended: `KNOWN_VIEW_GAP` of test_nfs_ganesha_handles.py).

With the defence (the config oneroot renders: `Squash = All_Squash`, nobody) READ is refused;
without it (the same config with the view `No_Root_Squash`, as before) the secret is read.
Either way the view keeps working for a node: a world-readable file is read, an emptied 0700
`/root` lists as empty, and the walk to its layer crosses the 0700 state dir (o+rx in the
view's upper, `nfs.view`). Pinned open: a world-readable file below an emptied directory is
still read through a forged handle (`KNOWN_SQUASH_GAP`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from oneroot.model import NfsServerKind
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster, resolve_cluster
from oneroot.nfs import unmount_view
from oneroot.nfs.ganesha import GaneshaServer
from oneroot.ops.imagefs import XFS, images_root
from oneroot.ops.layerfs import unmount_layer_fs
from oneroot.ops.nfs_serving import apply_nfs, ganesha_files, nfs_plan
from oneroot.testing.inventory import loopback_settings, make_inventory, make_node
from oneroot.testing.nfs4raw import Nfs4, ganesha_handle, kernel_handle
from oneroot.testing.ports import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts)"),
    pytest.mark.skipif(shutil.which("ganesha.nfsd") is None, reason="needs nfs-ganesha"),
]

# path below the server root: (text, mode). Masked: shadow (a named secret), the files in
# /root (emptied). `root/public` is world-readable below an emptied dir.
FILES = {"etc/passwd": ("public\n", 0o644), "etc/shadow": ("secret shadow\n", 0o600),
         "root/secret": ("secret of root\n", 0o600), "root/public": ("public in root\n", 0o644)}
SECRETS = ("shadow", "root_secret")
SPELLINGS = ("flag", "longer", "gen0")  # what the index whiteouts miss
KNOWN_SQUASH_GAP = {f"root_public_{s}" for s in SPELLINGS}


@pytest.fixture
def server_root() -> Iterator[Path]:
    # On / itself, not a tmpfs: the view's lower needs xattrs (as test_nfs_view_secrets).
    base = Path("/var/tmp") / f"oneroot-squash-{os.getpid()}"
    for rel, (text, mode) in FILES.items():
        path = base / "root" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
    (base / "root/root").chmod(0o700)
    (base / "root/var/state/systems").mkdir(parents=True)
    (base / "root/var/state").chmod(0o700)  # the junctions' parent, as a real state dir
    try:
        yield base / "root"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _cluster(root: Path) -> ResolvedCluster:
    return resolve_cluster(make_inventory(
        nodes=[make_node(1, address="127.0.0.1")],
        settings=loopback_settings(root / "var/state", nfs_server=NfsServerKind.GANESHA),
        image_root=root))


def _spellings(passwd: bytes, path: Path) -> dict[str, bytes]:
    """The forged overlayfs handles of `path` (a leaked inode and generation) through the
    view, as test_nfs_ganesha_handles.py makes them: ANY_ENDIAN set, 4 bytes appended; and
    with no leak at all, generation 0 (ext4 takes it for any: a scan of inode numbers)."""
    ovl_type, ovl = passwd[6 + 8], passwd[6 + 8 + 1:]  # after header, VFS flags, fsid
    _, fid = kernel_handle(path)
    fh = ovl[:-8] + fid
    return {"flag": ganesha_handle(passwd, ovl_type, fh[:6] + bytes([fh[6] | 2]) + fh[7:]),
            "longer": ganesha_handle(passwd, ovl_type,
                                     fh[:5] + bytes([fh[5] + 4]) + fh[6:] + bytes(4)),
            "gen0": ganesha_handle(passwd, ovl_type, fh[:-4] + bytes(4))}


def _attack(root: Path, port: int) -> dict[str, dict[str, int]]:
    client = Nfs4("127.0.0.1", port)
    passwd = client.handle_of(f"{root}/etc/passwd")
    results = {"passwd": client.probe(passwd),
               "root_dir": client.probe(client.handle_of(f"{root}/root")),
               # the walk to node01's layer, through the view's 0700 state dir
               "own_layer": client.probe(client.handle_of(f"{root}/var/state/systems/node01"))}
    for name, path in {"shadow": root / "etc/shadow", "root_secret": root / "root/secret",
                       "root_public": root / "root/public"}.items():
        for spelling, fh in _spellings(passwd, path).items():
            results[f"{name}_{spelling}"] = client.probe(fh)
    return results


@pytest.mark.parametrize("defence", [True, False], ids=["all_squash", "no_squash"])
def test_forged_view_handles_read_only_world_readable_files(server_root: Path,
                                                           defence: bool) -> None:
    cluster = _cluster(server_root)
    paths = Paths(home=server_root / "var/lib/oneroot")
    port = free_port()
    plan = nfs_plan(cluster, paths, port=port)
    assert plan.text.count("Squash = All_Squash;") == 1, plan.text  # the view, only
    config = plan.text if defence else plan.text.replace("All_Squash", "No_Root_Squash")
    server = GaneshaServer(ganesha_files(paths), config=config,
                           bind=cluster.settings.server_address, port=port)
    try:
        apply_nfs(cluster, paths, plan=plan)

        async def scenario() -> dict[str, dict[str, int]]:
            async with server:
                return await asyncio.to_thread(_attack, server_root, port)

        results = asyncio.run(scenario())
    finally:
        for spec in plan.views.values():
            with contextlib.suppress(Exception):
                unmount_view(spec)
        unmount_layer_fs(server_root / "var/state/systems/node01")
        unmount_layer_fs(images_root(paths), XFS)  # `apply_nfs` made it (ops.imagefs)
    print(results)
    # The view works for a node either way: a public file, an empty /root, its own layer.
    assert results["passwd"]["read"] == 0
    assert results["root_dir"]["readdir"] == 0 and results["own_layer"]["readdir"] == 0
    read = {name for name, procs in results.items() if procs["read"] == 0}
    secrets = {f"{s}_{spelling}" for s in SECRETS for spelling in SPELLINGS}
    if defence:
        assert read == {"passwd"} | KNOWN_SQUASH_GAP
    else:  # the same attack without the defence reads the secrets
        assert read == {"passwd"} | KNOWN_SQUASH_GAP | secrets
