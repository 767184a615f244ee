"""What an image's versions are, how two differ, and which can go: `oneroot image versions`,
`image diff` and `image gc`.

A version is in use when a node runs it (its last boot file named it: the boot events), when
a node boots it next (the inventory resolves to it), when a group or node pins it by number,
or when it is the image's latest complete version (what `image=NAME` follows). `gc` removes
only versions in none of these uses, older than the grace period, and only trees oneroot made
(under `HOME/images/`); it is a dry run unless told `--yes`, like `terraform plan`/`apply`:
removing a tree cannot be undone.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from oneroot.errors import Conflict, InvalidValue
from oneroot.inventory.store import InventoryStore
from oneroot.model.cluster import ImageVersion, VersionState, parse_image_ref
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster, resolve_cluster
from oneroot.ops.image_exec import (
    PackageChanges,
    TreeChanges,
    _dpkg_packages,
    compare_manifests,
    compare_packages,
    tree_manifest,
)
from oneroot.ops.image_versions import build_dir, find_image, image_lock, resolve_version
from oneroot.ops.imagefs import trim_images_fs
from oneroot.ops.inventory import commit

log = logging.getLogger(__name__)

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DEFAULT_GRACE = "7d"


def parse_duration(text: str) -> float:
    """`7d`, `12h`, `30m`, `90s`, `0` → seconds."""
    m = _DURATION.match(text.lower())
    if m is None:
        raise InvalidValue(f"bad duration {text!r}", hint="write e.g. 7d, 12h, 30m or 0")
    return int(m.group(1)) * _SECONDS[m.group(2)]


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionUse:
    """One version and who uses it."""

    image: str
    version: ImageVersion
    latest: bool  # what `image=NAME` follows
    runs: tuple[str, ...]  # nodes whose last boot file named it
    boots_next: tuple[str, ...]  # nodes the inventory resolves to it
    pinned_by: tuple[str, ...]  # `group:NAME` / `node:NAME` setting image=NAME@N

    @property
    def ref(self) -> str:
        return f"{self.image}@{self.version.number}"

    @property
    def in_use(self) -> bool:
        return self.latest or bool(self.runs or self.boots_next or self.pinned_by)

    def as_json(self) -> dict[str, object]:
        v = self.version
        return {"version": v.number, "ref": self.ref, "state": v.state.value,
                "parent": v.parent, "command": v.command, "changes": v.changes or None,
                "created": v.created or None,
                "size": v.size, "added": v.added, "root": str(v.root),
                "kernel": v.kernel or None, "initramfs": v.initramfs or None,
                "latest": self.latest, "runs": list(self.runs),
                "boots_next": list(self.boots_next), "pinned_by": list(self.pinned_by)}


def _pins(cluster: ResolvedCluster, name: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    owners = [(f"group:{g.name}", g.values) for g in cluster.groups.values()]
    owners += [(f"node:{n.node.name}", n.node.overrides) for n in cluster.nodes.values()]
    for owner, values in owners:
        text = values.get("image")
        if not isinstance(text, str):
            continue
        try:
            ref = parse_image_ref(text)
        except InvalidValue:
            continue
        if ref.name == name and ref.version is not None:
            out.setdefault(ref.version, []).append(owner)
    return out


def version_uses(cluster: ResolvedCluster, name: str, booted: Mapping[str, str]
                 ) -> list[VersionUse]:
    """Every version of image `name`, oldest first, with its uses. `booted`: node → NAME@N
    it runs (`image_versions.booted_versions`)."""
    image = find_image(cluster.inventory, name)
    latest = image.latest().number
    pins = _pins(cluster, name)
    out = []
    for v in image.all_versions():
        ref = f"{name}@{v.number}"
        runs = tuple(n for n, b in sorted(booted.items()) if n in cluster.nodes and
                     (b == ref or (b == name and v.number == 1)))
        nexts = tuple(n for n, r in cluster.nodes.items()
                      if r.image.name == name and (r.image.version or 1) == v.number)
        out.append(VersionUse(image=name, version=v, latest=v.number == latest and v.complete,
                              runs=runs, boots_next=nexts,
                              pinned_by=tuple(sorted(pins.get(v.number, ())))))
    return out


# -- diff --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class VersionDiff:
    old: str
    new: str
    packages: PackageChanges
    files: TreeChanges

    def as_json(self) -> dict[str, object]:
        p, f = self.packages, self.files
        return {"from": self.old, "to": self.new,
                "packages": {"installed": list(p.installed), "upgraded": list(p.upgraded),
                             "removed": list(p.removed)},
                "files": {"added": list(f.added), "changed": list(f.changed),
                          "removed": list(f.removed)}}


def diff_versions(cluster: ResolvedCluster, old: str, new: str) -> VersionDiff:
    """Packages (dpkg status) and files (type, mode, owner, size, mtime, link target) that
    differ from `old` to `new` (`lab@2`, `lab@3`, or `lab`: the latest)."""
    refs = []
    roots = []
    for text in (old, new):
        image, version = resolve_version(cluster.inventory, text)
        if image.live:
            raise InvalidValue(f"image {image.name} is the server's live `/`: it has no "
                               "versions to compare",
                               hint=f"see `oneroot image versions {image.name}`")
        if not version.complete:
            raise InvalidValue(f"{image.name}@{version.number} is not complete "
                               f"({version.state.value})",
                               hint=f"see `oneroot image versions {image.name}`")
        refs.append(f"{image.name}@{version.number}")
        roots.append(Path(version.root))
    return VersionDiff(
        old=refs[0], new=refs[1],
        packages=compare_packages(_dpkg_packages(roots[0]), _dpkg_packages(roots[1])),
        files=compare_manifests(tree_manifest(roots[0]), tree_manifest(roots[1])))


# -- gc ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class GcItem:
    ref: str
    root: Path
    size: int
    action: str  # "remove", "keep: …"

    def as_json(self) -> dict[str, object]:
        return {"ref": self.ref, "root": str(self.root), "size": self.size,
                "action": self.action}


def _made_by_oneroot(paths: Paths, root: Path) -> bool:
    images = (paths.home / "images").resolve()
    return root.resolve().is_relative_to(images) and root.resolve() != images


def gc_plan(cluster: ResolvedCluster, paths: Paths, name: str, booted: Mapping[str, str], *,
            now: float, grace: float, only: int | None = None) -> list[GcItem]:
    """What `gc` would do with each version of image `name`, oldest first. `only`: that
    version alone, whatever its age, and refused (`Conflict`, with what uses it) when in
    use."""
    items = []
    uses = version_uses(cluster, name, booted)
    if only is not None:
        find_image(cluster.inventory, name).get_version(only)
        uses = [u for u in uses if u.version.number == only]
        grace = 0.0
    for use in uses:
        v = use.version
        if v.state is VersionState.BUILDING:
            items.append(GcItem(ref=use.ref, root=Path(v.root), size=0,
                                action="remove: unfinished (its exec died, unless one runs)"))
            continue
        why = []
        if use.latest:
            why.append("latest")
        if use.runs:
            why.append("runs on " + ",".join(use.runs))
        if use.boots_next:
            why.append("booted next by " + ",".join(use.boots_next))
        if use.pinned_by:
            why.append("pinned by " + ",".join(use.pinned_by))
        if not why and now - v.created < grace:
            why.append("younger than the grace period")
        if not why and not _made_by_oneroot(paths, Path(v.root)):
            why.append(f"{v.root} was not made by oneroot")
        items.append(GcItem(ref=use.ref, root=Path(v.root), size=v.added or v.size,
                            action="keep: " + "; ".join(why) if why else "remove"))
        if only is not None and why:
            raise Conflict(f"cannot remove {use.ref}: {'; '.join(why)}", hint=_unpin_hint(use))
    return items


def _unpin_hint(use: VersionUse) -> str:
    if use.pinned_by:
        kind, _, owner = use.pinned_by[0].partition(":")
        return (f"pin {kind} {owner} to another version first, e.g. `oneroot {kind} set "
                f"{owner} --set image={use.image}`")
    if use.runs or use.boots_next:
        return "it stays while a node runs or boots it; reboot them onto another version"
    if use.latest:
        return f"the latest version stays: `image={use.image}` follows it"
    return "remove that directory yourself if it is no longer wanted"


def gc_image(store: InventoryStore, paths: Paths, name: str, booted: Mapping[str, str], *,
             now: float, grace: float, apply: bool, only: int | None = None) -> list[GcItem]:
    """`gc_plan`, and with `apply` the versions marked `remove` go: their record first (so
    nothing resolves or exports them), then their tree. Under the image's lock: an exec holds
    it while it builds, so a version still `building` here is one whose builder died."""
    if not apply:
        return gc_plan(resolve_cluster(store.load()), paths, name, booted, now=now,
                       grace=grace, only=only)
    with image_lock(paths, name):
        inv = store.load()
        items = gc_plan(resolve_cluster(inv), paths, name, booted, now=now, grace=grace,
                        only=only)
        gone = {item.ref for item in items if item.action.startswith("remove")}
        if not gone:
            return items
        image = find_image(inv, name)
        left = tuple(v for v in image.all_versions() if f"{name}@{v.number}" not in gone)
        commit(store, inv.replace(images={**inv.images,
                                          name: dataclasses.replace(image, versions=left)}))
        own_boot = Path(inv.settings.boot_dir) / "images" / name
        for item in items:
            if item.action.startswith("remove"):
                number = int(item.ref.rsplit("@", 1)[1])
                shutil.rmtree(build_dir(paths, name, number), ignore_errors=True)
                shutil.rmtree(item.root, ignore_errors=True)
                # its own kernel and initramfs (a later version sharing them names the
                # directory of the version that built them, which is not this one then)
                if not any(v.kernel.startswith(f"images/{name}/{number}/") for v in left):
                    shutil.rmtree(own_boot / str(number), ignore_errors=True)
                log.info("image.gc removed=%s root=%s", item.ref, item.root)
        trim_images_fs(paths)  # the freed space leaves the images filesystem's file too
    return items
