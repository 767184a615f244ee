"""`oneroot overlay drift`: what the nodes of a group override, compared across nodes.

Each node's `upper/` is node-written, so it is walked only with `oneroot.fsutil.walk` (no
link followed, bounded depth) and files are hashed through `read_bounded` (a descriptor
opened `O_NOFOLLOW | O_NONBLOCK`, a size cap): a FIFO or device is never opened, a link is
compared by its target and never followed, and a file over the cap is reported as too large
to compare. Directories are not changes (overlayfs makes them on copy-up) unless opaque.
oneroot's own generated identity files differ per node by design and are left out.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shlex
import stat
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from oneroot.fsutil import MAX_READ, UnsafePath, fd_opaque, is_whiteout, open_dir, read_bounded
from oneroot.fsutil import walk as nofollow_walk
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster
from oneroot.ops.inventory import get_group
from oneroot.ops.nodes_fs import node_layer
from oneroot.ops.overlays import generated_files

PROMOTABLE = frozenset({"file", "symlink", "whiteout"})
MAX_ENTRIES = 200_000  # entries walked in one node's layer before the rest is left out


@dataclass(frozen=True, slots=True, kw_only=True)
class Variant:
    """One node's version of a path: its kind and a digest of what it is (content, mode,
    owner; a link's target; for a file too large to compare, a digest unique to the node)."""

    kind: str  # file | symlink | whiteout | opaque directory | FIFO | device | socket | too large
    digest: str
    detail: str = ""  # a link's target


@dataclass(frozen=True, slots=True, kw_only=True)
class PathDrift:
    path: str  # the node's path, /etc/motd
    variants: tuple[tuple[str, Variant], ...]  # (node, its version), by node name
    contents: int  # distinct versions among the nodes that override the path
    identical_on_all: bool  # every node scanned has this same version
    promote: str | None  # the command that moves it into the group layer

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.variants)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "overrides": len(self.variants), "contents": self.contents,
                "kinds": sorted({v.kind for _, v in self.variants}),
                "identical_on_all": self.identical_on_all, "promote": self.promote,
                "nodes": {n: {"kind": v.kind, "digest": v.digest,
                              **({"target": v.detail} if v.detail else {})}
                          for n, v in self.variants}}


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSummary:
    node: str
    files: int  # entries that are changes (not plain directories)
    bytes: int  # of its regular files
    last_change: datetime.datetime | None  # newest ctime in its layer
    error: str | None = None  # why the layer could not be (fully) read

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "files": self.files, "bytes": self.bytes,
                "last_change": self.last_change.isoformat() if self.last_change else None,
                "error": self.error}


@dataclass(frozen=True, slots=True, kw_only=True)
class DriftReport:
    group: str | None
    nodes: tuple[str, ...]
    promote_to: str | None  # the layer group a change identical on all nodes goes to
    paths: tuple[PathDrift, ...]
    summaries: tuple[NodeSummary, ...]

    def to_json(self) -> dict[str, Any]:
        return {"group": self.group, "nodes": list(self.nodes), "promote_to": self.promote_to,
                "paths": [p.to_json() for p in self.paths],
                "summary": [s.to_json() for s in self.summaries]}


def _owner(st: os.stat_result) -> bytes:
    return f"{stat.S_IMODE(st.st_mode):o}:{st.st_uid}:{st.st_gid}".encode()


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big") + part)
    return h.hexdigest()[:16]


def _variant(node: str, pfd: int, name: str, st: os.stat_result, shown: str,
             limit: int) -> Variant | None:
    """What the entry is; None for a plain directory or an entry gone meanwhile."""
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return None  # opaque directories are found by the caller (it holds their fd)
    if is_whiteout(st):
        return Variant(kind="whiteout", digest="whiteout")
    if stat.S_ISLNK(mode):
        target = os.readlink(name, dir_fd=pfd)  # the link itself: never followed
        return Variant(kind="symlink", digest=_digest(b"l", target.encode(errors="surrogateescape"),
                                                      _owner(st)), detail=target)
    if not stat.S_ISREG(mode):
        what = "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"
        return Variant(kind=what, digest=_digest(what.encode(), str(st.st_rdev).encode(),
                                                 _owner(st)))
    too_large = Variant(kind="too large", digest=_digest(b"big", node.encode(), shown.encode()))
    if st.st_size > limit:
        return too_large
    try:
        data = read_bounded(pfd, name, limit=limit, shown=shown)
    except UnsafePath:
        return too_large  # grew past the cap, or swapped for something else meanwhile
    return Variant(kind="file", digest=_digest(b"f", data.data, _owner(data.st)))


def _opaque(pfd: int, name: str) -> bool:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=pfd)
    except OSError:
        return False
    try:
        return fd_opaque(fd)
    finally:
        os.close(fd)


class _TooMany(Exception):
    pass


def scan_node(cluster: ResolvedCluster, paths: Paths, node: str, *, limit: int = MAX_READ,
              max_entries: int = MAX_ENTRIES) -> tuple[dict[str, Variant], NodeSummary]:
    """Every change in the node's `upper/` (by node path) and the node's summary. A layer
    that cannot be walked whole (missing, a mount point or a tree too deep inside, more than
    `max_entries` entries) gives what was read before, and says why in `error`."""
    if cluster.node(node).profile.block_union:  # its changes are inside its ext4 file
        return {}, NodeSummary(node=node, files=0, bytes=0, last_change=None, error=(
            "union=block: its changes are in its ext4 file, not scanned here (`oneroot "
            f"overlay ls {node}` reads it while the node is off)"))
    skip = {str(PurePosixPath("/") / p) for p in generated_files(paths, node)}
    found: dict[str, Variant] = {}
    files = size = 0
    newest = 0.0
    error = None
    seen = 0
    try:
        with open_dir(node_layer(cluster.dirs, node).root, ("upper",)) as top:
            for parts, st, pfd in nofollow_walk(top, same_dev=os.fstat(top).st_dev):
                seen += 1
                if seen > max_entries:
                    raise _TooMany
                shown = "/" + "/".join(parts)
                newest = max(newest, st.st_ctime)
                if stat.S_ISDIR(st.st_mode):
                    if _opaque(pfd, parts[-1]):
                        found[shown] = Variant(kind="opaque directory",
                                               digest=_digest(b"o", _owner(st)))
                    continue
                files += 1
                size += st.st_size if stat.S_ISREG(st.st_mode) else 0
                if shown in skip:
                    continue
                try:
                    variant = _variant(node, pfd, parts[-1], st, shown, limit)
                except FileNotFoundError:
                    continue  # removed while we walked (a running node)
                if variant is not None:
                    found[shown] = variant
    except _TooMany:
        error = f"more than {max_entries} entries: the rest is not compared"
    except (OSError, UnsafePath) as exc:
        error = exc.message if isinstance(exc, UnsafePath) else f"{exc.strerror}"
    last = (datetime.datetime.fromtimestamp(newest, datetime.UTC) if newest else None)
    return found, NodeSummary(node=node, files=files, bytes=size, last_change=last,
                              error=error)


def _group_nodes(cluster: ResolvedCluster, group: str | None) -> tuple[str, ...]:
    if group is None:
        return tuple(cluster.nodes)
    get_group(cluster.inventory, group)  # an unknown group is NotFound, with a hint
    return tuple(n for n, r in cluster.nodes.items() if group in r.node.groups)


def _promote_target(cluster: ResolvedCluster, group: str | None,
                    nodes: tuple[str, ...]) -> str | None:
    """The layer group that holds every scanned node: the one named, or else the first
    layer group common to all of them."""
    if group is not None:
        return group if group in cluster.layer_groups else None
    common = [g for g in (cluster.nodes[nodes[0]].node.groups if nodes else ())
              if g in cluster.layer_groups
              and all(g in cluster.nodes[n].node.groups for n in nodes)]
    return common[0] if common else None


def cluster_drift(cluster: ResolvedCluster, paths: Paths, group: str | None = None, *,
                  limit: int = MAX_READ, max_entries: int = MAX_ENTRIES) -> DriftReport:
    """Every path a node of `group` (all nodes without one) overrides, with how many nodes
    override it and in how many distinct versions; a change identical on all of them is
    offered for `oneroot overlay promote` into their common layer group."""
    nodes = _group_nodes(cluster, group)
    target = _promote_target(cluster, group, nodes)
    per_path: dict[str, list[tuple[str, Variant]]] = {}
    summaries = []
    for node in nodes:
        found, summary = scan_node(cluster, paths, node, limit=limit,
                                   max_entries=max_entries)
        summaries.append(summary)
        for path, variant in found.items():
            per_path.setdefault(path, []).append((node, variant))
    drifts = []
    for path in sorted(per_path):
        variants = tuple(per_path[path])
        digests = {v.digest for _, v in variants}
        kind = variants[0][1].kind
        same = len(variants) == len(nodes) and len(digests) == 1 and kind != "too large"
        promote = None
        if same and target is not None and kind in PROMOTABLE:
            promote = shlex.join(["oneroot", "overlay", "promote", variants[0][0], path,
                                  "--to", target])
        drifts.append(PathDrift(path=path, variants=variants, contents=len(digests),
                                identical_on_all=same, promote=promote))
    return DriftReport(group=group, nodes=nodes, promote_to=target, paths=tuple(drifts),
                       summaries=tuple(summaries))
