"""`oneroot overlay …`: a node's diff-overlay seen and edited from the server.

Registered on the main group by `register(cli)`; the commands are thin over
`oneroot.ops.overlays`. Paths are the node's own (`/etc/motd`).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

import click

from oneroot.cli.output import console, emit_json, table
from oneroot.errors import UsageError
from oneroot.model.inventory import Inventory
from oneroot.ops import inventory as inv_ops
from oneroot.ops import overlays as ov
from oneroot.ops.paths import Paths
from oneroot.overlay.tooling import shown


class _HasPaths(Protocol):
    paths: Paths


@contextmanager
def _inventory(obj: _HasPaths) -> Iterator[Inventory]:
    store = inv_ops.open_store(obj.paths)
    try:
        yield store.load()
    finally:
        store.close()


def _say(result: ov.OverlayResult) -> None:
    console.print(f"{result.node}: {result.message}", markup=False)
    if result.archive is not None:
        console.print(f"the replaced file is saved in {result.archive}", markup=False)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.group()
def overlay() -> None:
    """A node's own layer: what it overrides, adds and masks; edit it, reset it, promote a
    change to a group layer or the image. Paths are the node's (/etc/motd)."""


@overlay.command("ls")
@click.argument("node")
@click.argument("path", required=False)
@json_option
@click.pass_obj
def overlay_ls(obj: _HasPaths, node: str, path: str | None, as_json: bool) -> None:
    """What NODE overrides, adds and masks (below PATH), and what each hides."""
    with _inventory(obj) as inv:
        changes = ov.list_overlay(inv, obj.paths, node, path)
    if as_json:
        emit_json([c.to_json() for c in changes])
        return
    rows = []
    for c in changes:
        hides = f"{c.lower.layer.name}: {c.lower.location}" if c.lower else "-"
        rows.append((shown(c.rel), c.kind, c.node.type, hides,
                     "generated" if c.generated else ""))
    table(None, ["path", "change", "type", "hides", "note"], rows)


@overlay.command("diff")
@click.argument("node")
@click.argument("path", required=False)
@click.pass_obj
def overlay_diff(obj: _HasPaths, node: str, path: str | None) -> None:
    """Unified diffs of NODE's files against the image (a summary for binaries)."""
    with _inventory(obj) as inv:
        for _, text in ov.diff_overlay(inv, obj.paths, node, path):
            click.echo(text, nl=False)


@overlay.command("cp")
@click.argument("node")
@click.argument("path")
@click.option("--force", is_flag=True, help="Replace the node's own version.")
@click.pass_obj
def overlay_cp(obj: _HasPaths, node: str, path: str, force: bool) -> None:
    """Start an override: copy the image's PATH (content, owner, mode, mtime) to NODE."""
    with _inventory(obj) as inv:
        _say(ov.copy_from_lower(inv, obj.paths, node, path, force=force))


def _run_editor(command: str) -> ov.Editor:
    def run(file: Path) -> None:
        try:
            proc = subprocess.run([*shlex.split(command), str(file)], check=False)
        except FileNotFoundError:
            raise UsageError(f"editor {command!r} not found",
                             hint="set $EDITOR (or $VISUAL)") from None
        if proc.returncode != 0:
            raise UsageError(f"{command} exited with {proc.returncode}: nothing written")
    return run


@overlay.command("edit")
@click.argument("node")
@click.argument("path")
@click.pass_obj
def overlay_edit(obj: _HasPaths, node: str, path: str) -> None:
    """Edit NODE's PATH with $EDITOR (starting from the image's file if NODE has none)."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with _inventory(obj) as inv:
        _say(ov.edit_file(inv, obj.paths, node, path, _run_editor(editor)))


def _mode(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        mode = int(text, 8)
    except ValueError:
        raise UsageError(f"--mode {text!r} is not an octal mode", hint="e.g. --mode 0644") \
            from None
    if not 0 <= mode <= 0o7777:
        raise UsageError(f"--mode {text!r} is out of range", hint="e.g. --mode 0644")
    return mode


@overlay.command("put")
@click.argument("node")
@click.argument("path")
@click.argument("file", type=click.File("rb"))
@click.option("--mode", default=None, help="Octal mode [default: kept from the file replaced, "
                                           "or the image's, else 0644].")
@click.pass_obj
def overlay_put(obj: _HasPaths, node: str, path: str, file: BinaryIO,
                mode: str | None) -> None:
    """Make FILE (`-` for stdin) NODE's PATH."""
    with _inventory(obj) as inv:
        _say(ov.put_file(inv, obj.paths, node, path, file, mode=_mode(mode)))


@overlay.command("rm")
@click.argument("node")
@click.argument("path")
@click.option("--recursive", "-r", is_flag=True, help="A directory and all in it.")
@click.pass_obj
def overlay_rm(obj: _HasPaths, node: str, path: str, recursive: bool) -> None:
    """Drop NODE's override, addition or mask at PATH: the image's file shows again."""
    with _inventory(obj) as inv:
        _say(ov.remove_change(inv, obj.paths, node, path, recursive=recursive))


@overlay.command("mask")
@click.argument("node")
@click.argument("path")
@click.option("--force", is_flag=True,
              help="Mask even if nothing below has PATH, or over the node's own file.")
@click.pass_obj
def overlay_mask(obj: _HasPaths, node: str, path: str, force: bool) -> None:
    """Hide PATH from NODE (a whiteout in its layer)."""
    with _inventory(obj) as inv:
        _say(ov.mask_path(inv, obj.paths, node, path, force=force))


@overlay.command("reset")
@click.argument("node")
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@click.option("--no-archive", is_flag=True, help="Do not save the layer first.")
@click.pass_obj
def overlay_reset(obj: _HasPaths, node: str, yes: bool, no_archive: bool) -> None:
    """Drop every change of NODE (its generated identity files stay). Reboot it after."""
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"reset drops every change of {node}: confirm with --yes")
        click.confirm(f"drop every change of {node} (reboot it afterwards)?", abort=True)
    with _inventory(obj) as inv:
        result = ov.reset_layer(inv, obj.paths, node, archive=not no_archive)
    console.print(f"{node}: removed {result.removed} entries, kept {len(result.kept)} "
                  "generated files", markup=False)
    if result.archive is not None:
        console.print(f"the layer as it was is saved in {result.archive}", markup=False)


@overlay.command("promote")
@click.argument("node")
@click.argument("path")
@click.option("--to", "target", required=True, metavar="GROUP|image",
              help="A group with a layer of its own, or `image`.")
@click.option("--overwrite", is_flag=True,
              help="Replace a different file already there (it is archived).")
@click.pass_obj
def overlay_promote(obj: _HasPaths, node: str, path: str, target: str,
                    overwrite: bool) -> None:
    """Move NODE's change at PATH into a group layer or the image, for all their nodes."""
    with _inventory(obj) as inv:
        _say(ov.promote_change(inv, obj.paths, node, path, to=target, overwrite=overwrite))


def register(cli: click.Group) -> None:
    cli.add_command(overlay)
