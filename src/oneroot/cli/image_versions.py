"""`oneroot image versions|diff|gc`: an image's versions, what changed between two, and
removing those nothing uses."""

from __future__ import annotations

import datetime
import time

import click

from oneroot.cli.output import console, emit_json, plain, table
from oneroot.cli.state import State, json_option, pass_state
from oneroot.model.cluster import parse_image_ref
from oneroot.ops.image_history import (
    DEFAULT_GRACE,
    diff_versions,
    gc_image,
    parse_duration,
    version_uses,
)
from oneroot.ops.image_versions import booted_versions, find_image


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _when(epoch: float) -> str:
    if not epoch:
        return "-"
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


@click.command("versions")
@click.argument("name")
@json_option
@pass_state
def image_versions(state: State, name: str, as_json: bool) -> None:
    """Image NAME's versions: size, parent, what made each, who runs or pins it."""
    cluster = state.cluster()
    if name.startswith("/"):
        name = next((i.name for i in sorted(cluster.images.values(), key=lambda i: i.name)
                     if str(i.root) == name), name)
    image = find_image(cluster.inventory, name)
    if image.live:
        if as_json:
            emit_json({"image": name, "live": True, "root": str(image.root), "versions": []})
            return
        console.print(plain(f"image {name} is the server's live `/`: it has no versions. A "
                            "change to `/` (image exec, apt on the server) reaches every "
                            "node at its next boot, and running nodes see it at once; there "
                            "is nothing to roll back to."))
        return
    uses = version_uses(cluster, name, booted_versions(state.paths))
    if as_json:
        emit_json({"image": name, "live": False, "root": str(image.root),
                   "versions": [u.as_json() for u in uses]})
        return
    rows = []
    for u in uses:
        v = u.version
        rows.append((
            u.ref + (" (latest)" if u.latest else ""), v.state.value,
            _size(v.size) if v.size else "-", _size(v.added) if v.parent else "-",
            f"@{v.parent}" if v.parent else "-", _when(v.created), v.command,
            ",".join(u.runs) or "-", ",".join(u.boots_next) or "-",
            ",".join(u.pinned_by) or "-"))
    table(None, ["version", "state", "size", "added", "parent", "created", "made by", "runs",
                 "boots next", "pinned by"], rows)


@click.command("diff")
@click.argument("old")
@click.argument("new")
@json_option
@pass_state
def image_diff(state: State, old: str, new: str, as_json: bool) -> None:
    """Packages and files that differ from version OLD to NEW: `image diff lab@2 lab@3`."""
    diff = diff_versions(state.cluster(), old, new)
    if as_json:
        emit_json(diff.as_json())
        return
    p, f = diff.packages, diff.files
    console.print(plain(f"{diff.old} → {diff.new}: {len(p.installed)} packages installed, "
                        f"{len(p.upgraded)} upgraded, {len(p.removed)} removed; "
                        f"{len(f.added)} files added, {len(f.changed)} changed, "
                        f"{len(f.removed)} removed"))
    rows = ([("installed", x) for x in p.installed] + [("upgraded", x) for x in p.upgraded]
            + [("removed", x) for x in p.removed])
    if rows:
        table("packages", ["change", "package"], rows)
    files = ([("A", "/" + x) for x in f.added] + [("M", "/" + x) for x in f.changed]
             + [("D", "/" + x) for x in f.removed])
    if files:
        table("files", ["", "path"], files)


@click.command("gc")
@click.argument("name")
@click.option("--grace", default=DEFAULT_GRACE, show_default=True,
              help="Keep versions younger than this (7d, 12h, 30m, 0).")
@click.option("--yes", "apply", is_flag=True,
              help="Remove them (without it: only say what would go).")
@json_option
@pass_state
def image_gc(state: State, name: str, grace: str, apply: bool, as_json: bool) -> None:
    """Remove image NAME's versions no node runs, boots next or pins, older than the grace
    period; NAME@N: that version only (refused while anything uses it). A dry run unless
    --yes."""
    seconds = parse_duration(grace)
    ref = parse_image_ref(name)
    name = ref.name
    with state.store() as store:
        items = gc_image(store, state.paths, name, booted_versions(state.paths),
                         now=time.time(), grace=seconds, apply=apply, only=ref.version)
    if as_json:
        emit_json({"image": name, "applied": apply, "versions": [i.as_json() for i in items]})
        return
    table(None, ["version", "root", "bytes", "action"],
          [(i.ref, i.root, _size(i.size), ("removed" if apply else "would remove")
            if i.action.startswith("remove") else i.action) for i in items])
    gone = [i for i in items if i.action.startswith("remove")]
    if gone and not apply:
        console.print(plain(f"dry run: {len(gone)} version(s) would go; run again with --yes"))
