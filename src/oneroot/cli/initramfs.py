"""`oneroot initramfs build`: oneroot's own initramfs, reproducibly."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from oneroot.cli.output import console, emit_json, table
from oneroot.cli.state import State, json_option, pass_state
from oneroot.ops.initramfs_build import build_boot_initramfs


@click.group()
def initramfs() -> None:
    """oneroot's own initramfs: assembles the node's root from the layers in root=."""


@initramfs.command("build")
@click.option("--kernel", "kernel", default=None, metavar="VERSION|DIR",
              help="A Debian kernel version (fetched with apt-get download) or an unpacked "
                   "kernel tree [default: Debian's current linux-image-amd64].")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="[default: BOOT_DIR/initramfs.img]")
@click.option("--compression", type=click.Choice(["gzip", "zstd"]), default="gzip",
              show_default=True)
@click.option("--nic", "nics", multiple=True, help="Extra NIC driver module(s), e.g. igb.")
@click.option("--install-kernel/--no-install-kernel", default=True, show_default=True,
              help="Copy the kernel to BOOT_DIR/vmlinuz too.")
@json_option
@pass_state
def initramfs_build(state: State, kernel: str | None, out: Path | None, compression: str,
                    nics: tuple[str, ...], install_kernel: bool, as_json: bool) -> None:
    """Build the initramfs (reproducible: the same inputs give the same bytes)."""
    with Progress(TextColumn("{task.description:<28}"), BarColumn(), TaskProgressColumn(),
                  console=console, transient=True, disable=as_json) as bar:
        task = bar.add_task("initramfs", total=None)
        built = build_boot_initramfs(
            state.load(), state.paths, kernel=kernel, out=out, compression=compression,
            nics=nics, install_kernel=install_kernel,
            progress=lambda step, done, total: bar.update(task, description=step,
                                                          completed=done, total=total))
    report, kernel_copy = built.report, built.kernel_copy
    if as_json:
        emit_json({"path": str(report.path), "size": report.size, "sha256": report.sha256,
                   "files": report.files, "kernel": report.kernel_version,
                   "modules": list(report.modules), "kernel_copy": str(kernel_copy or "")})
        return
    table(f"initramfs {report.path} (kernel {report.kernel_version})",
          ["part", "files", "bytes"],
          [(p.name, p.files, f"{p.size:,}") for p in report.parts])
    console.print(f"{report.size:,} bytes compressed ({report.compression.value}), "
                  f"{report.files} entries, {len(report.modules)} kernel modules, "
                  f"sha256 {report.sha256[:16]}…")
    if kernel_copy:
        console.print(f"kernel: {kernel_copy}")
