"""Boot binaries from Debian's packages (ipxe, pxelinux, syslinux-common), copied into the
boot dir: TFTP never follows a symlink out of its root, and git never holds them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from oneroot.fsutil import write_if_changed

log = logging.getLogger(__name__)

# name in the boot dir -> where Debian installs it, and the package that does
BOOT_BINARIES: dict[str, tuple[str, str]] = {
    "undionly.kpxe": ("/usr/lib/ipxe/undionly.kpxe", "ipxe"),
    "ipxe.efi": ("/usr/lib/ipxe/ipxe.efi", "ipxe"),
    "snponly.efi": ("/usr/lib/ipxe/snponly.efi", "ipxe"),
    "pxelinux.0": ("/usr/lib/PXELINUX/pxelinux.0", "pxelinux"),
    "ldlinux.c32": ("/usr/lib/syslinux/modules/bios/ldlinux.c32", "syslinux-common"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class BootBinaryReport:
    copied: tuple[str, ...]
    present: tuple[str, ...]
    missing: tuple[tuple[str, str], ...]  # (name, package)


def install_boot_binaries(boot_dir: Path, *, source_root: Path = Path("/"),
                          names: Sequence[str] = tuple(BOOT_BINARIES)) -> BootBinaryReport:
    copied, present, missing = [], [], []
    for name in names:
        source, package = BOOT_BINARIES[name]
        path = source_root / source.lstrip("/")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            missing.append((name, package))
            continue
        if write_if_changed(boot_dir / name, data):
            copied.append(name)
        else:
            present.append(name)
    for name, package in missing:
        log.warning("boot.binary_missing file=%s package=%s", name, package)
    return BootBinaryReport(copied=tuple(copied), present=tuple(present), missing=tuple(missing))
