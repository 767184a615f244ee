"""bench/union's NFS RPC counter: per mount (the plain-NFS `find` counts its own mount's
superblock only), and each NFS superblock once, however many mounts show it (the union).

Mounts of one export share a superblock, and /proc/self/mountstats repeats its counters under
each mount: the old sum counted the union's image layer and /mnt/plain twice (READDIR
1163/2320/3489 for the same `find`)."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

UNION = Path(__file__).resolve().parents[3] / "bench" / "union"

MOUNTINFO = """\
22 1 0:21 / / rw - tmpfs none rw
30 22 0:50 / /run/oneroot/layers/0 ro - nfs4 10.0.0.1:/image ro
31 22 0:51 / /run/oneroot/layers/1 rw - nfs4 10.0.0.1:/state/node01 rw
40 22 0:50 / /mnt/plain ro - nfs4 10.0.0.1:/image ro
41 22 0:5 / /proc rw - proc proc rw
"""


def _stats(mountpoint: str, readdir: int, getattr_: int) -> str:
    return (f"device 10.0.0.1:/x mounted on {mountpoint} with fstype nfs4 statvers=1.1\n"
            "\topts:\trw,vers=4.2\n\tper-op statistics\n"
            "\t        NULL: 0 0 0 0 0 0 0 0 0\n"
            f"\t     READDIR: {readdir} {readdir} 0 100 200 1 {readdir} {readdir * 2} 0\n"
            f"\t     GETATTR: {getattr_} {getattr_} 0 100 200 1 {getattr_} {getattr_ * 3} 0\n")


MOUNTSTATS = ("device proc mounted on /proc with fstype proc\n"
              + _stats("/run/oneroot/layers/0", 1163, 1188)
              + _stats("/run/oneroot/layers/1", 10, 7)
              + _stats("/mnt/plain", 1163, 1188))


def _nfsops_shell() -> str:
    spec = importlib.util.spec_from_file_location("bench_union", UNION / "bench_union.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    nfsops: str = module.NFSOPS
    assert nfsops in module.PROBE  # the probe the guest runs uses this very function
    return nfsops


def _nfsops(tmp_path: Path, mountpoint: str) -> dict[str, tuple[int, int]]:
    (tmp_path / "mountinfo").write_text(MOUNTINFO)
    (tmp_path / "mountstats").write_text(MOUNTSTATS)
    done = subprocess.run(["bash", "-c", _nfsops_shell() + f"\nnfsops '{mountpoint}'"],
                          check=True, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "MOUNTINFO": str(tmp_path / "mountinfo"),
                               "MOUNTSTATS": str(tmp_path / "mountstats")})
    return {op: (int(n), int(ms)) for op, n, ms in
            (line.split() for line in done.stdout.splitlines())}


def test_one_mount_counts_its_own_superblock_only(tmp_path: Path) -> None:
    counts = _nfsops(tmp_path, "/mnt/plain")  # 0:50, not the node's layer 0:51
    assert counts["READDIR"] == (1163, 1163 * 2)
    assert counts["GETATTR"] == (1188, 1188 * 3)


def test_each_superblock_is_counted_once(tmp_path: Path) -> None:
    counts = _nfsops(tmp_path, "")
    # 0:50 (the image layer and /mnt/plain) once, plus 0:51 (the node's layer)
    assert counts["READDIR"] == (1163 + 10, (1163 + 10) * 2)
    assert counts["GETATTR"] == (1188 + 7, (1188 + 7) * 3)
    assert counts["NULL"] == (0, 0)
