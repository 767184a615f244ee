"""`union=block`: each image version's EROFS file and each node's ext4 top, made and recorded.

Layout (`settings.block_dir`, exported read-only to the cluster subnet):
    NAME@N.erofs        the version's tree as EROFS (reproducible: `overlay.blockimage`)
    NAME@N.erofs.json   how it was built: size, seconds, sha256, compression, epoch
A node's top is `<state_dir>/<node>/top.ext4` in its own directory (exported rw to it alone):
made once, sized by its `block_top_size`, never replaced here (`overlay reset` empties it).

A version's EROFS is built when the version is completed, if a `union=block` node boots the
image, and otherwise on demand (`oneroot image block NAME[@N]`, `oneroot nfs apply`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from oneroot.errors import InvalidValue
from oneroot.fsutil.atomic import write_atomic
from oneroot.model.cluster import Image, Settings
from oneroot.model.resolved import ResolvedCluster
from oneroot.overlay.blockimage import BlockBuild, Compression, build_erofs, make_ext4_top

log = logging.getLogger(__name__)

TOP_NAME = "top.ext4"


def version_label(image: Image) -> str:
    """`NAME@N` of the version `image` stands for (an image without versions is its @1)."""
    return f"{image.name}@{image.version or image.latest().number}"


def block_file(s: Settings, image: Image) -> PurePosixPath:
    """Where `image`'s version lives as EROFS (what a block node's `root=` names)."""
    return s.block_dir / f"{version_label(image)}.erofs"


def top_file(s: Settings, node: str) -> PurePosixPath:
    """The node's writable ext4 file, in its own exported directory."""
    return s.diff_overlay_dir(node) / TOP_NAME


def _epoch(image: Image) -> int:
    """The build's fixed time: the version's completion (its files are older)."""
    number = image.version or image.latest().number
    created = next((v.created for v in image.all_versions() if v.number == number), 0.0)
    return int(created)


def read_record(s: Settings, image: Image) -> BlockBuild | None:
    """What `NAME@N.erofs.json` says of the version's EROFS file (None: no valid record)."""
    dest = Path(block_file(s, image))
    try:
        data = json.loads(Path(f"{dest}.json").read_text())
        return BlockBuild(path=dest, label=str(data["image"]), size=int(data["size"]),
                          seconds=float(data["seconds"]), sha256=str(data["sha256"]),
                          compress=Compression(data["compress"]), epoch=int(data["epoch"]),
                          built=float(data["built"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_block(s: Settings, image: Image, *, view: Path | None = None,
                compress: Compression = Compression.NONE) -> BlockBuild:
    """Build (or rebuild) the EROFS file of the version `image` stands for, and record it.

    An image nodes see through a masked view (the live `/`, a root holding the state dir) is
    built from its mounted `view`, on demand, with the build's own time as its epoch (a live
    root changes: no two builds are the same); `block_dir` is left out of it."""
    dest = Path(block_file(s, image))
    source, epoch = Path(image.root), _epoch(image)
    excludes: tuple[str, ...] = ()
    if view is not None:
        source, epoch = view, int(time.time())
        inside = PurePosixPath(s.block_dir).relative_to(image.root) if PurePosixPath(
            s.block_dir).is_relative_to(image.root) else None
        excludes = (str(inside),) if inside is not None else ()
    elif image.live:
        raise InvalidValue(
            f"image {image.name} is the server's live `/`: its EROFS file is built from "
            "its masked view, which is not mounted",
            hint=f"`oneroot nfs apply` mounts it (and builds the file for union=block "
                 f"nodes), or `oneroot image block {image.name}` after it")
    record = build_erofs(source, dest, label=version_label(image), epoch=epoch,
                         compress=compress, excludes=excludes)
    write_atomic(Path(f"{dest}.json"),
                 (json.dumps(record.to_json(), indent=2) + "\n").encode(), mode=0o644)
    log.info("image.block_built image=%s size=%d seconds=%.2f compress=%s", record.label,
             record.size, record.seconds, record.compress.value)
    return record


def block_images(cluster: ResolvedCluster) -> dict[str, Image]:
    """The image versions `union=block` nodes boot, by `NAME@N`."""
    return {version_label(r.image): r.image for r in cluster.nodes.values()
            if r.profile.block_union}


def ensure_blocks(cluster: ResolvedCluster,
                  views: Mapping[str, Path] | None = None) -> list[BlockBuild]:
    """Build each EROFS file a `union=block` node boots that is not there yet; an image
    exported through a masked view is built from its mounted view (`views`, by name)."""
    s = cluster.settings
    made = []
    for image in block_images(cluster).values():
        if read_record(s, image) is None or not Path(block_file(s, image)).is_file():
            made.append(build_block(s, image, view=(views or {}).get(image.name)))
    return made


def ensure_tops(cluster: ResolvedCluster) -> list[str]:
    """Make the ext4 top of each `union=block` node that has none; the nodes it made."""
    s = cluster.settings
    made = []
    for name, r in cluster.nodes.items():
        if not r.profile.block_union:
            continue
        top = Path(top_file(s, name))
        if top.is_symlink() or top.exists():
            continue
        make_ext4_top(top, size=r.profile.block_top_bytes, label=name,
                      upper_from=Path(s.diff_overlay_dir(name)) / "upper")
        made.append(name)
    return made
