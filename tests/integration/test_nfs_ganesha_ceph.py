"""nfs_server=ganesha-ceph: an image, a group layer and node layers that live in CephFS,
exported by nfs-ganesha's FSAL_CEPH with the `rados_cluster` recovery backend.

The session's Ceph runs in a lab namespace (`ceph_cluster`); the boot server's ganesha runs
in a namespace of its own on that network, and node01 and node02 each in theirs, reading
with libnfs' userspace client (the host has no kernel NFS client). The server writes the
layers through a ceph-fuse mount of the same CephFS. Needs root.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from oneroot.errors import ConfigError
from oneroot.lab import Lab
from oneroot.lab.netns import Client
from oneroot.model import Image, NfsServerKind, Settings
from oneroot.model.inventory import Inventory
from oneroot.model.paths import Paths
from oneroot.model.resolved import resolve_cluster
from oneroot.nfs.ganesha_ceph import grace_command
from oneroot.nfs.server_union import UnionUnsupported
from oneroot.ops.nfs_serving import ganesha_files, nfs_plan
from oneroot.testing import nfsclient
from oneroot.testing.ceph import (
    DAEMONS,
    CephCluster,
    ceph_inventory,
    retire,
    serve_ganesha_ceph,
    tiny_image,
)
from oneroot.testing.inventory import make_node, node_mac
from oneroot.testing.nfs4state import NFS4ERR_ACCESS
from oneroot.testing.nfsclient import NfsClient

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, ceph-fuse)"),
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in (*DAEMONS, "ceph-fuse", "ganesha.nfsd",
                                               "ganesha-rados-grace"))
        or not nfsclient.available(),
        reason="needs ceph, nfs-ganesha-ceph, nfs-ganesha-rados-grace and libnfs-utils"),
]

HEAD_A = ipaddress.IPv4Address("10.96.0.2")
ONEROOT = [sys.executable, "-m", "oneroot"]
KNOWN_FORGED_HANDLE_GAP = False  # each export's cephx user reaches only its own path


@dataclass(frozen=True, slots=True)
class CephServing:
    mount: Path  # CephFS on the server (ceph-fuse)
    base: Path  # this test's directory in CephFS
    image: Path
    inventory: Inventory
    paths: Paths


@pytest.fixture
def serving(ceph_cluster: CephCluster, tmp_path: Path) -> Iterator[CephServing]:
    mount = tmp_path / "cephfs"
    with ceph_cluster.mounted(mount):
        base = mount / f"oneroot-{os.getpid()}-{time.monotonic_ns()}"
        image = base / "images" / "tiny"
        tiny_image(image)
        inv = ceph_inventory(base, mount=mount, image=image, conf=ceph_cluster.conf,
                             server=HEAD_A)
        # `base` is left in CephFS: the session's cluster is thrown away at the end, and
        # removing files a stopped ganesha had open waits for the MDS to close its session.
        yield CephServing(mount=mount, base=base, image=image, inventory=inv,
                          paths=Paths(home=tmp_path / "home"))


def _serve(lab: Lab, head: Client, serving: CephServing) -> subprocess.Popen[bytes]:
    return serve_ganesha_ceph(lab, head.netns, serving.paths, serving.inventory)


def _forge(lab: Lab, node: NfsClient, serving: CephServing) -> dict[str, object]:
    """node01 forges a FSAL_CEPH handle: its own export's id with the CephFS inode number
    of node02's /etc/hostname (handle: version, flags, export id, length 24, then the
    inode, snapshot id and filesystem id, little-endian)."""
    own_path = f"{serving.base}/systems/node01/upper/etc/hostname"
    victim = serving.base / "systems/node02/upper/etc/hostname"
    assert node.netns is not None

    def attempt(hexfh: str) -> dict[str, object]:
        out = lab.run_in_ns([sys.executable, "-m", "oneroot.testing.nfs4state", str(HEAD_A),
                             own_path, "--forge", hexfh], netns=node.netns, check=False)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        assert isinstance(result, dict)
        return result

    own = bytes.fromhex(str(attempt("{own}")["own"]))
    assert own[0] == 0x43 and own[4] == 24, own.hex()  # ganesha 4.3, FSAL_CEPH's 24 bytes
    forged = own[:5] + struct.pack("<Q", victim.stat().st_ino) + own[13:]
    return attempt(forged.hex())


def _node(lab: Lab, index: int) -> Client:
    """Node `index` on the lab network with its inventory MAC (serve pins address to MAC)."""
    client = lab.add_client(f"10.96.0.{10 + index}/24")
    for step in (("down",), ("address", str(node_mac(index))), ("up",)):
        lab.run_in_ns(["ip", "link", "set", "dev", client.interface, *step],
                      netns=client.netns)
    return client


def test_ganesha_ceph_exports_layers_to_their_nodes_only(ceph_cluster: CephCluster,
                                                          serving: CephServing) -> None:
    lab = ceph_cluster.lab
    assert lab is not None
    head = lab.add_client(f"{HEAD_A}/24")
    node01, node02 = (NfsClient(2049, host=str(HEAD_A), netns=_node(lab, i).netns)
                      for i in (1, 2))
    try:
        _serve_and_read(ceph_cluster, lab, head, node01, node02, serving)
    finally:
        for netns in (head.netns, node01.netns, node02.netns):
            assert netns is not None
            retire(lab, netns)
        # A member that is gone would keep the others in grace (rados_cluster).
        plan = nfs_plan(resolve_cluster(serving.inventory), serving.paths)
        assert plan.ctx.ceph is not None
        ceph_cluster.run(*grace_command(plan.ctx.ceph, "remove", plan.ctx.ceph.nodeid))


def _serve_and_read(ceph_cluster: CephCluster, lab: Lab, head: Client, node01: NfsClient,
                    node02: NfsClient, serving: CephServing) -> None:
    proc = _serve(lab, head, serving)
    conf = ganesha_files(serving.paths).conf.read_text()
    assert "Name = CEPH;" in conf and "RecoveryBackend = rados_cluster;" in conf
    assert f'Nodeid = "{HEAD_A}";' in conf
    base, image = serving.base, serving.image
    rel = "/" + str(base.relative_to(serving.mount))
    assert f'Path = "{rel}/systems/node01";' in conf  # FSAL path: inside CephFS
    try:
        # The image, from CephFS, to every node.
        for node in (node01, node02):
            assert "CephFS" in node.read(f"{image}/etc/os-release")
        # Each node's own layer (made by `apply_nfs` in CephFS) to that node alone.
        assert node01.read(f"{base}/systems/node01/upper/etc/hostname") == "node01\n"
        assert node02.read(f"{base}/systems/node02/upper/etc/hostname") == "node02\n"
        stolen = node02.cat(f"{base}/systems/node01/upper/etc/hostname")
        assert stolen.returncode != 0, "node02 read node01's layer"
        assert node02.lists_nothing(f"{base}/systems/node01")
        # A node writes its layer over NFS: the file is in CephFS (seen through ceph-fuse).
        local = serving.paths.home / "payload"
        local.write_text("written by node01 over NFS\n")
        ok = node01.copy_in(local, f"{base}/systems/node01/upper/new.txt")
        assert ok.returncode == 0, ok.stderr
        assert (base / "systems/node01/upper/new.txt").read_text() == local.read_text()
        refused = node02.copy_in(local, f"{base}/systems/node01/upper/evil.txt")
        assert refused.returncode != 0
        assert not (base / "systems/node01/upper/evil.txt").exists()
        # The group layer, read-only to the group's nodes.
        (base / "groups/compute/g.txt").write_text("group\n")
        assert node02.read(f"{base}/groups/compute/g.txt") == "group\n"
        bad = node01.copy_in(local, f"{base}/groups/compute/w.txt")
        assert bad.returncode != 0 and not (base / "groups/compute/w.txt").exists()
        # A forged handle (issue 11's attack): node01's export id with the inode number of
        # node02's file. FSAL_CEPH, like FSAL_VFS, does not check that a handle lies below
        # its export; with one cephx user for all exports node01 read node02's file
        # (measured). Each export's own user, with MDS caps on its path only, refuses it.
        forged = _forge(lab, node01, serving)
        print(f"forged FSAL_CEPH handle of node02's /etc/hostname through node01's export: "
              f"{forged}")
        assert (forged.get("read") == "node02\n") is KNOWN_FORGED_HANDLE_GAP, forged
        assert forged["status"] == NFS4ERR_ACCESS, forged
    finally:
        lab.stop_process(proc, timeout=60)
        # The MDS keeps a stopped ganesha's sessions for a successor to reclaim (failover),
        # with their capabilities, which would stall the next test's writes in CephFS.
        assert ceph_cluster.evict_sessions(f"ganesha-{HEAD_A}-") >= 1


def test_live_root_and_server_union_are_refused(serving: CephServing) -> None:
    # The masked view of a live `/` has no CephFS equivalent: one error with a hint.
    inv = serving.inventory
    live = inv.replace(images={"default": Image(name="default", root=PurePosixPath("/"))})
    with pytest.raises(ConfigError, match="no CephFS equivalent") as err:
        nfs_plan(resolve_cluster(live), serving.paths)
    assert "image create" in (err.value.hint or "")
    # A directory outside CephFS cannot be exported by FSAL_CEPH.
    outside = inv.replace(images={"default": Image(name="default",
                                                   root=PurePosixPath("/srv/images/x"))})
    with pytest.raises(ConfigError, match="outside CephFS"):
        nfs_plan(resolve_cluster(outside), serving.paths)
    # Server-side union: an overlayfs mount FSAL_CEPH cannot export.
    union = inv.with_nodes([make_node(1, address="10.96.0.11", union="server")])
    with pytest.raises(UnionUnsupported, match="ganesha-ceph"):
        nfs_plan(resolve_cluster(union), serving.paths)
    # No CephFS mount configured.
    unset = inv.replace(settings=Settings(nfs_server=NfsServerKind.GANESHA_CEPH))
    with pytest.raises(ConfigError, match="cephfs_mount"):
        nfs_plan(resolve_cluster(unset), serving.paths)
