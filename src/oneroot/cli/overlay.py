"""`oneroot overlay …`: a node's diff-overlay seen and edited from the server.

Thin over `oneroot.ops.overlays`. Paths are the node's own (`/etc/motd`).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

import click

from oneroot.cli.output import console, emit_json, plain, table
from oneroot.cli.state import State, json_option, pass_state
from oneroot.errors import UsageError
from oneroot.ops import overlay_drift as drift
from oneroot.ops import overlays as ov
from oneroot.ops.knfsd_subtree import MustReboot
from oneroot.overlay.stack import shown


def _say(result: ov.OverlayResult) -> None:
    console.print(f"{result.node}: {result.message}", markup=False)
    if result.archive is not None:
        console.print(f"the replaced file is saved in {result.archive}", markup=False)
    _must_reboot(result.must_reboot)


def _must_reboot(items: tuple[MustReboot, ...]) -> None:
    for item in items:
        console.print(plain(f"warning: {item.message}"))


@click.group()
def overlay() -> None:
    """A node's own layer: what it overrides, adds and masks; edit it, reset it, promote a
    change to a group layer or the image. Paths are the node's (/etc/motd)."""


@overlay.command("ls")
@click.argument("node")
@click.argument("path", required=False)
@json_option
@pass_state
def overlay_ls(state: State, node: str, path: str | None, as_json: bool) -> None:
    """What NODE overrides, adds and masks (below PATH), and what each hides."""
    cluster = state.cluster()
    changes = ov.list_overlay(cluster, state.paths, node, path)
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
@pass_state
def overlay_diff(state: State, node: str, path: str | None) -> None:
    """Unified diffs of NODE's files against the image (a summary for binaries)."""
    cluster = state.cluster()
    for _, text in ov.diff_overlay(cluster, state.paths, node, path):
        click.echo(text, nl=False)


@overlay.command("cp")
@click.argument("node")
@click.argument("path")
@click.option("--force", is_flag=True, help="Replace the node's own version.")
@pass_state
def overlay_cp(state: State, node: str, path: str, force: bool) -> None:
    """Start an override: copy the image's PATH (content, owner, mode, mtime) to NODE."""
    cluster = state.cluster()
    _say(ov.copy_from_lower(cluster, state.paths, node, path, force=force))


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
@pass_state
def overlay_edit(state: State, node: str, path: str) -> None:
    """Edit NODE's PATH with $EDITOR (starting from the image's file if NODE has none)."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    cluster = state.cluster()
    _say(ov.edit_file(cluster, state.paths, node, path, _run_editor(editor)))


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


allow_special_option = click.option(
    "--allow-special", is_flag=True,
    help="Allow a setuid/setgid file, a device or a file with capabilities.")


@overlay.command("put")
@click.argument("node")
@click.argument("path")
@click.argument("file", type=click.File("rb"))
@click.option("--mode", default=None, help="Octal mode [default: kept from the file replaced, "
                                           "or the image's, else 0644].")
@allow_special_option
@pass_state
def overlay_put(state: State, node: str, path: str, file: BinaryIO,
                mode: str | None, allow_special: bool) -> None:
    """Make FILE (`-` for stdin) NODE's PATH."""
    cluster = state.cluster()
    _say(ov.put_file(cluster, state.paths, node, path, file, mode=_mode(mode),
                     allow_special=allow_special))


@overlay.command("rm")
@click.argument("node")
@click.argument("path")
@click.option("--recursive", "-r", is_flag=True, help="A directory and all in it.")
@pass_state
def overlay_rm(state: State, node: str, path: str, recursive: bool) -> None:
    """Drop NODE's override, addition or mask at PATH: the image's file shows again."""
    cluster = state.cluster()
    _say(ov.remove_change(cluster, state.paths, node, path, recursive=recursive))


@overlay.command("mask")
@click.argument("node")
@click.argument("path")
@click.option("--force", is_flag=True,
              help="Mask even if nothing below has PATH, or over the node's own file.")
@pass_state
def overlay_mask(state: State, node: str, path: str, force: bool) -> None:
    """Hide PATH from NODE (a whiteout in its layer)."""
    cluster = state.cluster()
    _say(ov.mask_path(cluster, state.paths, node, path, force=force))


@overlay.command("reset")
@click.argument("node")
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@click.option("--no-archive", is_flag=True, help="Do not save the layer first.")
@pass_state
def overlay_reset(state: State, node: str, yes: bool, no_archive: bool) -> None:
    """Drop every change of NODE (its generated identity files stay). Reboot it after."""
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"reset drops every change of {node}: confirm with --yes")
        click.confirm(f"drop every change of {node} (reboot it afterwards)?", abort=True)
    cluster = state.cluster()
    result = ov.reset_layer(cluster, state.paths, node, archive=not no_archive)
    console.print(f"{node}: removed {result.removed} entries, kept {len(result.kept)} "
                  "generated files", markup=False)
    if result.archive is not None:
        console.print(f"the layer as it was is saved in {result.archive}", markup=False)
    _must_reboot(result.must_reboot)


@overlay.command("promote")
@click.argument("node")
@click.argument("path")
@click.option("--to", "target", required=True, metavar="GROUP|image",
              help="A group with a layer of its own, or `image`.")
@click.option("--overwrite", is_flag=True,
              help="Replace a different file already there (it is archived).")
@allow_special_option
@pass_state
def overlay_promote(state: State, node: str, path: str, target: str,
                    overwrite: bool, allow_special: bool) -> None:
    """Move NODE's change at PATH into a group layer or the image, for all their nodes."""
    cluster = state.cluster()
    _say(ov.promote_change(cluster, state.paths, node, path, to=target, overwrite=overwrite,
                           allow_special=allow_special))


@overlay.command("drift")
@click.argument("group", required=False)
@json_option
@pass_state
def overlay_drift(state: State, group: str | None, as_json: bool) -> None:
    """Every path the nodes of GROUP (all nodes without one) override: by how many nodes, in
    how many distinct contents; a change identical on all of them is offered for promote.
    Below it, each node's layer in a line (files, bytes, last change)."""
    cluster = state.cluster()
    report = drift.cluster_drift(cluster, state.paths, group)
    if as_json:
        emit_json(report.to_json())
        return
    rows = []
    for p in report.paths:
        kinds = ", ".join(sorted({v.kind for _, v in p.variants}))
        rows.append((p.path, f"{len(p.variants)}/{len(report.nodes)}", p.contents, kinds,
                     p.promote or ("identical on all" if p.identical_on_all else "-")))
    if rows:
        table(None, ["path", "nodes", "contents", "kind", "promote"], rows)
    else:
        console.print("no node overrides anything", markup=False)
    if report.promote_to is None and any(p.identical_on_all for p in report.paths):
        console.print(plain(f"changes identical on all nodes cannot be promoted: "
                            f"{group or 'these nodes'} share no group with a layer of its own"))
    console.print()
    table(None, ["node", "files", "bytes", "last change", "error"],
          [(s.node, s.files, s.bytes,
            s.last_change.strftime("%Y-%m-%d %H:%M:%S UTC") if s.last_change else "-",
            s.error or "") for s in report.summaries])
