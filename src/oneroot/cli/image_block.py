"""`oneroot image block NAME[@N]`: build an image version's EROFS file for `union=block`
nodes (also done when a version is completed, and by `nfs apply`), and say what it cost."""

from __future__ import annotations

import os
from pathlib import Path

import click

from oneroot.cli.output import console, emit_json, plain
from oneroot.cli.state import State, json_option, pass_state
from oneroot.errors import ConfigError
from oneroot.ops.image_block import block_file, build_block
from oneroot.ops.image_versions import resolve_version
from oneroot.ops.nfs_serving import nfs_plan
from oneroot.overlay.blockimage import Compression


@click.command("block")
@click.argument("ref")
@click.option("--compress", type=click.Choice([c.value for c in Compression]),
              default=Compression.NONE.value, show_default=True,
              help="EROFS compression (the node kernel reads lz4, not LZMA).")
@json_option
@pass_state
def image_block(state: State, ref: str, compress: str, as_json: bool) -> None:
    """Build REF's EROFS file (NAME: the latest version; NAME@N) for union=block nodes."""
    cluster = state.cluster()
    image, version = resolve_version(cluster.inventory, ref)
    at = image.at(version.number)
    spec = nfs_plan(cluster, state.paths).views.get(image.name) if version.number == 1 else None
    if spec is not None and not os.path.ismount(spec.mountpoint):
        raise ConfigError(f"image {image.name} is exported through a masked view, and it is "
                          "not mounted: its EROFS file is built from the view",
                          hint="`oneroot nfs apply` mounts it (and builds the file for "
                               "union=block nodes)")
    view = Path(spec.mountpoint) if spec is not None else None
    record = build_block(cluster.settings, at, view=view, compress=Compression(compress))
    if as_json:
        emit_json({**record.to_json(), "path": str(block_file(cluster.settings, at))})
        return
    console.print(plain(f"{record.label}: {block_file(cluster.settings, at)} "
                        f"{record.size / (1 << 20):.1f} MiB ({record.compress.value}) in "
                        f"{record.seconds:.2f} s, sha256 {record.sha256[:16]}…"))
