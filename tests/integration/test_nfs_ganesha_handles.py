"""Forged file handles against nfs-ganesha (issue 11 item 4, the ganesha half): the real
ganesha in oneroot's layout on loopback, node01 (127.0.0.1) as the attacker speaking NFSv4
itself (`oneroot.testing.nfs4raw`), handles made the way ganesha's FSAL_VFS makes them.

ganesha checks a handle's export id against the client and its fsid against the export's
filesystems, and nothing else: it has no subtree check (`nfs4raw`'s docstring). So what is
refused is what those checks and overlayfs's own decoder refuse; what answers is listed in
`KNOWN_GAP` and in docs/security.md ("Forged handles"): every object on a filesystem that
holds an export of the attacker's, through that export, and non-directories of the view's
lower filesystem through the view (overlayfs decodes lower handles without a path check).
The test pins that split, so a change either way is seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from oneroot.model import NfsServerKind
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster, resolve_cluster
from oneroot.nfs import unmount_view
from oneroot.ops.nfs_serving import apply_nfs, ganesha_server, nfs_plan
from oneroot.testing.inventory import loopback_settings, make_inventory, make_node
from oneroot.testing.nfs4raw import Nfs4, ganesha_handle, kernel_handle
from oneroot.testing.ports import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts)"),
    pytest.mark.skipif(shutil.which("ganesha.nfsd") is None, reason="needs nfs-ganesha"),
]

FILES = {"etc/passwd": "public\n", "etc/shadow": "secret shadow\n", "usr/bin/tool": "tool\n",
         "var/state/systems/node02/upper/etc/node02-secret": "secret of node02\n"}
# Answered today (docs/security.md, "Forged handles"): the export's filesystem is open to
# its clients through it, and the view's lower non-directories through the view.
KNOWN_GAP = {"ino2_own", "shadow_own", "outside_own", "node02_dir_own", "node02_secret_own",
             "shadow_view_ovl", "outside_view_ovl", "node02_secret_view_ovl"}


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


def _cluster(root: Path) -> ResolvedCluster:
    return resolve_cluster(make_inventory(
        nodes=[make_node(1, address="127.0.0.1"), make_node(2, address="127.0.0.2")],
        settings=loopback_settings(root / "var/state", nfs_server=NfsServerKind.GANESHA),
        image_root=root))


def _forge(client: Nfs4, root: Path, export_ids: dict[str, int]) -> dict[str, bytes]:
    """node01's own handles from GETFH, and the forged ones built on them."""
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
            handles[f"{name}_view_ovl"] = ganesha_handle(passwd, ovl_type, ovl[:-8] + fid)
    return handles


def test_forged_handles_against_ganesha(server_root: Path) -> None:
    cluster = _cluster(server_root)
    paths = Paths(home=server_root / "var/lib/oneroot")
    port = free_port()
    plan = nfs_plan(cluster, paths, port=port)
    export_ids = {key.split(":")[-1]: number for key, number in plan.export_ids.items()}

    def attack() -> dict[str, dict[str, int]]:
        client = Nfs4("127.0.0.1", port)
        handles = _forge(client, server_root, export_ids)
        return {name: client.probe(fh) for name, fh in handles.items()}

    try:
        apply_nfs(cluster, paths, plan=plan)

        async def scenario() -> dict[str, dict[str, int]]:
            async with ganesha_server(cluster, paths, port=port):
                return await asyncio.to_thread(attack)

        results = asyncio.run(scenario())
    finally:
        for spec in plan.views.values():
            with contextlib.suppress(Exception):
                unmount_view(spec)
    print(results)
    answered = {name for name, procs in results.items() if 0 in procs.values()}
    # The controls: node01's own export and a file the view shows, by their real handles.
    assert results["own_root"]["readdir"] == 0 and results["passwd_view_ovl"]["read"] == 0
    # Refused: another node's export id, ext4 handles through the view (overlayfs's decoder).
    assert not {n for n in answered if n.endswith(("_node02", "_view"))}
    assert answered == {"own_root", "passwd_view_ovl"} | KNOWN_GAP
