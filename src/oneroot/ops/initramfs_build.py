"""`oneroot initramfs build`: the node kernel and busybox fetched (or a kernel tree taken as
it is), the initramfs built into the boot dir, and the kernel copied beside it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from oneroot.fsutil import write_if_changed
from oneroot.initramfs.builder import BuildReport, build_initramfs
from oneroot.initramfs.busybox import fetch_busybox
from oneroot.initramfs.cpio import Compression
from oneroot.initramfs.kernel import Kernel, fetch_kernel
from oneroot.model.inventory import Inventory
from oneroot.model.paths import ClusterDirs, Paths

Progress = Callable[[str, int, int | None], None]
"""`progress(step, done, total)`: the fetch first (total None), then the builder's steps."""

FETCH_STEP = "fetching the kernel and busybox…"


@dataclass(frozen=True, slots=True, kw_only=True)
class InitramfsBuild:
    report: BuildReport
    kernel_copy: Path | None  # BOOT_DIR/vmlinuz (or beside `out`), when installed


def _no_progress(step: str, done: int, total: int | None) -> None:
    del step, done, total


def build_boot_initramfs(inv: Inventory, paths: Paths, *, kernel: str | None = None,
                         out: Path | None = None, compression: str = "gzip",
                         nics: Sequence[str] = (), install_kernel: bool = True,
                         kernel_version: str | None = None,
                         progress: Progress = _no_progress) -> InitramfsBuild:
    """Build the initramfs into `out` [default: BOOT_DIR/initramfs.img] for `kernel`: a
    Debian kernel version, an unpacked kernel tree (a directory), or None for Debian's
    current one; with `install_kernel`, copy its vmlinuz next to it. `kernel_version` picks
    one of a tree's kernels (an image holding several)."""
    target = out or ClusterDirs.of(inv.settings).boot_dir / "initramfs.img"
    progress(FETCH_STEP, 0, None)
    if kernel and Path(kernel).is_dir():
        node_kernel = Kernel.from_tree(Path(kernel), kernel_version)
    else:
        node_kernel = fetch_kernel(kernel, cache_dir=paths.cache_dir)
    busybox = fetch_busybox(cache_dir=paths.cache_dir)
    report = build_initramfs(kernel=node_kernel, busybox=busybox, out=target,
                             compression=Compression(compression), extra_nics=nics,
                             progress=progress)
    kernel_copy = None
    if install_kernel:
        kernel_copy = target.parent / "vmlinuz"
        write_if_changed(kernel_copy, node_kernel.vmlinuz.read_bytes())
    return InitramfsBuild(report=report, kernel_copy=kernel_copy)
