"""`oneroot image import NAME SOURCE`: an OCI image as NAME's next version."""

from __future__ import annotations

from pathlib import Path

import click

from oneroot.cli.output import console, emit_json, plain
from oneroot.cli.state import State, json_option, pass_state
from oneroot.initramfs.kernel import fetch_kernel
from oneroot.ops.image_import import import_image
from oneroot.ops.images import LAB_MODULES


@click.command("import")
@click.argument("name")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--ref", default=None,
              help="Which image of SOURCE: a tag (OCI), a name or @N (docker-archive).")
@click.option("--kernel", "kernel_version", default=None,
              help="Node kernel whose modules go in the image [default: Debian's current].")
@click.option("--lab-modules", is_flag=True,
              help="Only the modules a lab node needs (small), not the whole tree.")
@click.option("--no-modules", is_flag=True,
              help="Add no kernel modules (the image brings the node kernel's own).")
@json_option
@pass_state
def image_import(state: State, name: str, source: Path, ref: str | None,
                 kernel_version: str | None, lab_modules: bool, no_modules: bool,
                 as_json: bool) -> None:
    """Import an OCI image layout, oci-archive or docker-archive (podman save, skopeo copy,
    buildah) as image NAME's next version, or as a new image NAME."""
    moddir = None
    if not no_modules:
        with console.status("fetching the node kernel…"):
            moddir = fetch_kernel(kernel_version, cache_dir=state.paths.cache_dir).modules_dir
    with state.store() as store, console.status(f"importing {source}…") as status:
        result = import_image(store, state.paths, name, source, ref=ref,
                              kernel_modules_dir=moddir,
                              modules=LAB_MODULES if lab_modules else None,
                              progress=lambda msg: status.update(plain(msg)))
    if as_json:
        emit_json(result.as_json())
        return
    console.print(plain(f"image {result.image}@{result.version}: {result.root} "
                        f"({result.kind}, {result.init_system.value}, "
                        f"{result.size / 2**20:.0f} MiB, {result.seconds:.1f} s)"))
