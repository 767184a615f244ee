"""Where a node's server-side union is mounted: looked up in our mount table and, when the
NFS server runs in another mount namespace (`oneroot serve` in a lab), in the server's."""

from __future__ import annotations

from pathlib import Path

from oneroot.model.paths import Paths
from oneroot.nfs.ganesha import running_pid
from oneroot.nfs.server_union import MERGED_DIR, same_mount_ns, union_source
from oneroot.ops.nfs_serving import ganesha_files


def mounted_union(upper: Path, *, mountinfo: Path = Path("/proc/self/mountinfo")) -> str | None:
    """The mount point of a server-side overlayfs whose upperdir is `upper`, if any: known by
    its source (`oneroot-union-<node>` at `<node>/merged`) or, mounted by an older oneroot,
    by its `upperdir=` option."""
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return None
    merged = str(upper.parent / MERGED_DIR)
    for line in lines:
        head, sep, tail = line.partition(" - ")
        fields = tail.split()
        if sep and fields[:1] == ["overlay"] and len(fields) >= 3:
            where = head.split()[4]
            if (fields[1] == union_source(upper.parent.name) and where == merged) or \
                    f"upperdir={upper}" in fields[2].split(","):
                return where
    return None


def mountinfos(paths: Paths) -> list[Path]:
    """Our mount table and, when it runs in another mount namespace (`oneroot serve` in a
    lab), the NFS server's: that is where server-side unions are mounted."""
    found = [Path("/proc/self/mountinfo")]
    pid = running_pid(ganesha_files(paths))
    if pid is not None and not same_mount_ns(pid):
        found.append(Path(f"/proc/{pid}/mountinfo"))
    return found


def union_anywhere(paths: Paths, upper: Path) -> str | None:
    for mountinfo in mountinfos(paths):
        where = mounted_union(upper, mountinfo=mountinfo)
        if where is not None:
            return where
    return None
