"""Image versions in the inventory: reserve, record, pin, and the tree each one lives in.

The API other use-cases build on (`lab try`, rollout, OCI import):
- `add_version_from_tree(store, paths, name, tree, command=…)`: a finished tree becomes the
  image's next complete version (synced, moved into place, then recorded);
- `begin_version` / `finish_version` / `abandon_version`: the same in steps, for a builder
  that makes the tree in place (`image exec`);
- `pin_group(store, group, "lab@3")`, `pin_node(store, node, "lab")`: what a group or node
  boots (`lab`: the latest complete version; `lab@N`: that one);
- `resolve_version(inv, "lab@3") -> (Image, ImageVersion)`.

Layout: version 1 of an image recorded before versions is its own root (nothing moved).
Later versions live in `HOME/images/NAME.versions/N/` (a tree the NFS server exports
read-only); `.N.build/` next to it is one being made, never exported.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from oneroot.errors import Conflict, ExternalToolError, InvalidValue, NotFound, OnerootError
from oneroot.fsutil import fsync_path
from oneroot.initramfs.kernel import file_lock
from oneroot.inventory import database
from oneroot.inventory.events import EventStore
from oneroot.inventory.store import InventoryStore
from oneroot.model.cluster import Image, ImageVersion, VersionState, parse_image_ref
from oneroot.model.inventory import Inventory
from oneroot.model.paths import Paths
from oneroot.model.resolved import resolve_cluster
from oneroot.ops.image_block import block_images, build_block
from oneroot.ops.imagefs import mount_images_fs_if_made
from oneroot.ops.inventory import commit, detect_init_system, get_group, get_node

log = logging.getLogger(__name__)


def versions_dir(paths: Paths, name: str) -> Path:
    """Where image `name`'s versions after the first live."""
    return paths.home / "images" / f"{name}.versions"


def version_dir(paths: Paths, name: str, number: int) -> Path:
    return versions_dir(paths, name) / str(number)


def build_dir(paths: Paths, name: str, number: int) -> Path:
    """Where version `number` is made (never exported; renamed to `version_dir` when done)."""
    return versions_dir(paths, name) / f".{number}.build"


def find_image(inv: Inventory, name: str) -> Image:
    image = inv.images.get(name)
    if image is None:
        raise NotFound(f"no image named {name!r}", hint="see `oneroot image list`")
    return image


def resolve_version(inv: Inventory, text: str) -> tuple[Image, ImageVersion]:
    """`lab` → the latest complete version; `lab@3` → version 3 (NotFound if there is none)."""
    ref = parse_image_ref(text)
    image = find_image(inv, ref.name)
    return image, image.latest() if ref.version is None else image.get_version(ref.version)


@contextmanager
def image_lock(paths: Paths, name: str) -> Iterator[None]:
    """One version made at a time per image (across processes)."""
    mount_images_fs_if_made(paths)  # never write on the bare mount point of HOME/images
    directory = versions_dir(paths, name)
    directory.mkdir(parents=True, exist_ok=True)
    with file_lock(directory / ".lock"):
        yield


def record_version(store: InventoryStore, name: str, version: ImageVersion) -> ImageVersion:
    """Store `version` as it is now (e.g. with its change list), replacing its record."""
    return _with_version(store, name, version)


def _with_version(store: InventoryStore, name: str, version: ImageVersion) -> ImageVersion:
    """Record `version` (add or replace by number) in image `name`; returns it."""
    inv = store.load()
    image = find_image(inv, name)
    others = tuple(v for v in image.all_versions() if v.number != version.number)
    versions = tuple(sorted((*others, version), key=lambda v: v.number))
    commit(store, inv.replace(images={**inv.images,
                                      name: dataclasses.replace(image, versions=versions)}))
    return version


def begin_version(store: InventoryStore, paths: Paths, name: str, *, command: str,
                  parent: int | None = None, now: float | None = None) -> ImageVersion:
    """Reserve image `name`'s next version number and record it `building` (call under
    `image_lock`). Its tree is to be made at `build_dir(...)`; `parent` defaults to the
    latest complete version. Refused for a live root (`/`): it has no versions."""
    image = find_image(store.load(), name)
    if image.live:
        raise InvalidValue(f"image {name} is the server's live `/`: it has no versions",
                           hint="changes to `/` reach nodes at once; see "
                                f"`oneroot image versions {name}`")
    number = max(v.number for v in image.all_versions()) + 1
    while version_dir(paths, name, number).exists():  # left by a lost record: never reuse
        number += 1
    version = ImageVersion(
        number=number, root=PurePosixPath(version_dir(paths, name, number)),
        state=VersionState.BUILDING,
        parent=image.latest().number if parent is None else parent, command=command,
        created=time.time() if now is None else now, init_system=image.init_system.value)
    return _with_version(store, name, version)


def sync_tree(tree: Path) -> None:
    """Everything under `tree` on disk (syncfs of its filesystem), before it is marked done."""
    done = subprocess.run(["sync", "-f", str(tree)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ExternalToolError(f"sync -f {tree} failed: {done.stderr.strip()}")


def finish_version(store: InventoryStore, paths: Paths, name: str, version: ImageVersion,
                   tree: Path, *, size: int = 0, added: int = 0, kernel: str = "",
                   initramfs: str = "") -> ImageVersion:
    """`tree` (complete) becomes `version`'s root: synced, renamed into place, then recorded
    complete: from then on it may be pinned and exported."""
    dest = Path(version.root)
    if dest.exists():
        raise Conflict(f"{dest} already exists", hint="a version's directory is never reused")
    sync_tree(tree)
    os.rename(tree, dest)
    fsync_path(dest.parent, directory=True)
    done = dataclasses.replace(version, state=VersionState.COMPLETE,
                               init_system=detect_init_system(dest).value, size=size,
                               added=added, kernel=kernel, initramfs=initramfs)
    _with_version(store, name, done)
    log.info("image.version_done image=%s version=%d size=%d added=%d", name, done.number,
             size, added)
    _build_blocks(store, name, done.number)
    return done


def _build_blocks(store: InventoryStore, name: str, number: int) -> None:
    """The new version's EROFS file, when `union=block` nodes boot it. The version is
    complete whatever happens here: a failed build is logged and retried by `nfs apply`."""
    cluster = resolve_cluster(store.load())
    for image in block_images(cluster).values():
        if image.name == name and (image.version or 1) == number:
            try:
                build_block(cluster.settings, image)
            except OnerootError as exc:
                log.warning("image.block_failed image=%s@%d error=%s", name, number, exc)
            return


def abandon_version(store: InventoryStore, paths: Paths, name: str,
                    version: ImageVersion) -> None:
    """Forget a version that was not finished: its record and its build dir."""
    shutil.rmtree(build_dir(paths, name, version.number), ignore_errors=True)
    inv = store.load()
    image = inv.images.get(name)
    if image is None:
        return
    left = tuple(v for v in image.versions if v.number != version.number)
    commit(store, inv.replace(images={**inv.images,
                                      name: dataclasses.replace(image, versions=left)}))
    log.info("image.version_abandoned image=%s version=%d", name, version.number)


def add_version_from_tree(store: InventoryStore, paths: Paths, name: str, tree: Path, *,
                          command: str, parent: int | None = None, size: int = 0,
                          added: int = 0) -> ImageVersion:
    """A finished tree (on the same filesystem as `versions_dir`) becomes image `name`'s
    next complete version. The tree is moved, not copied."""
    with image_lock(paths, name):
        version = begin_version(store, paths, name, command=command, parent=parent)
        try:
            return finish_version(store, paths, name, version, tree, size=size, added=added)
        except BaseException:
            abandon_version(store, paths, name, version)
            raise


def _check_pin(inv: Inventory, ref_text: str) -> str:
    ref = parse_image_ref(ref_text)
    image = find_image(inv, ref.name)
    if ref.version is not None:
        if image.live:
            raise InvalidValue(f"image {ref.name} is the server's live `/`: it has no versions",
                               hint=f"pin image={ref.name}")
        image.complete_version(ref.version)
    return str(ref)


def pin_group(store: InventoryStore, group: str, ref: str) -> str:
    """Group `group` boots `ref` (`lab`: the latest; `lab@3`: fixed). Returns the old value
    ("" when the group did not set one)."""
    inv = store.load()
    old = get_group(inv, group)
    value = _check_pin(inv, ref)
    new = dataclasses.replace(old, values={**old.values, "image": value})
    commit(store, inv.replace(groups={**inv.groups, group: new}))
    return str(old.values.get("image", ""))


def pin_node(store: InventoryStore, node: str, ref: str) -> str:
    """Node `node` boots `ref` whatever its groups say. Returns the old override ("")."""
    inv = store.load()
    old = get_node(inv, node)
    value = _check_pin(inv, ref)
    new = dataclasses.replace(old, overrides={**old.overrides, "image": value})
    commit(store, inv.replace(nodes={**inv.nodes, node: new}))
    return str(old.overrides.get("image", ""))


def with_stored_versions(stored: Inventory, new: Inventory) -> Inventory:
    """`new` (e.g. a YAML file written by hand) with each image's stored versions kept where
    it names none and the root is the same: applying a file never forgets versions."""
    images = dict(new.images)
    for name, image in new.images.items():
        old = stored.images.get(name)
        if old is not None and old.versions and not image.versions and old.root == image.root:
            images[name] = dataclasses.replace(image, versions=old.versions)
    return new.replace(images=images)


def booted_versions(paths: Paths) -> dict[str, str]:
    """node → the image version (`NAME@N`) it booted last and so runs (from the boot events:
    `oneroot serve` records what each node's boot file named)."""
    if not database.exists(paths, paths.events_db):
        return {}
    events = EventStore(database.locate(paths, paths.events_db))
    try:
        return events.booted_images()
    finally:
        events.close()
