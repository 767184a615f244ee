"""`oneroot image exec` and `oneroot runlevel apply`, added to the existing `image` and
`runlevel` groups by `register(cli)`. Thin over `oneroot.ops.image_exec` and
`oneroot.ops.runlevels`.
"""

from __future__ import annotations

import click

from oneroot.cli.output import console, emit_json
from oneroot.errors import UsageError
from oneroot.ops import inventory as inv_ops
from oneroot.ops.paths import Paths


def _paths(ctx: click.Context) -> Paths:
    paths = getattr(ctx.find_root().obj, "paths", None)
    assert isinstance(paths, Paths)
    return paths


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
@click.option("--no-record", is_flag=True, help="Do not compare the tree before and after.")
@click.pass_context
def image_exec(ctx: click.Context, name: str, command: tuple[str, ...], no_record: bool) -> None:
    """Run COMMAND inside image NAME: `oneroot image exec NAME -- apt-get install -y htop`.

    A chroot with /proc, /sys and /dev mounted and service starts blocked (policy-rc.d); what
    changed is recorded under HOME/images/NAME.changes/. For an image that is the server's
    live `/`, the command runs on the server itself, without a chroot.
    """
    from oneroot.ops.image_exec import exec_in_image

    paths = _paths(ctx)
    store = inv_ops.open_store(paths)
    try:
        inv = store.load()
    finally:
        store.close()
    result = exec_in_image(inv, paths.home, name, command, record=not no_record)
    console.print(result.summary(), markup=False)
    for line in result.packages.installed[:20]:
        console.print(f"  + {line}", markup=False)
    if result.returncode != 0:
        raise UsageError(f"the command exited {result.returncode} inside image {name}",
                         hint="its output is above; the image keeps what it changed")


@click.command("apply")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def runlevel_apply(ctx: click.Context, as_json: bool) -> None:
    """Write every runlevel as a systemd target / OpenRC runlevel into the images nodes boot
    (into each node's own layer when the image is the server's live /). Idempotent."""
    from oneroot.ops.runlevels import apply_runlevels

    paths = _paths(ctx)
    store = inv_ops.open_store(paths)
    try:
        inv = store.load()
    finally:
        store.close()
    result = apply_runlevels(inv)
    if as_json:
        emit_json({"written": [str(p) for p in result.written],
                   "removed": [str(p) for p in result.removed], "skipped": result.skipped})
        return
    for p in result.written:
        console.print(f"wrote {p}", markup=False)
    for p in result.removed:
        console.print(f"removed {p}", markup=False)
    for why in result.skipped:
        console.print(f"left alone: {why}", markup=False)
    if not (result.changed or result.skipped):
        console.print("runlevels: nothing to change", markup=False)


def register(cli: click.Group) -> None:
    image = cli.commands["image"]
    runlevel = cli.commands["runlevel"]
    assert isinstance(image, click.Group) and isinstance(runlevel, click.Group)
    image.add_command(image_exec)
    runlevel.add_command(runlevel_apply)
