"""A private, verified-static busybox for initramfs images, and the ELF check behind it.

Owns `<cache>/busybox/<package version>/`: Debian's busybox-static unpacked with `dpkg-deb -x`.
The host's /bin/busybox is never used: the `busybox` package (dynamically linked) or a script
can stand in its place, and a dynamic binary fails in an initramfs without its libraries.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from oneroot.errors import BuildError, ExternalToolError
from oneroot.initramfs.kernel import apt_download, file_lock, remembered_apt_answer, run_tool

log = logging.getLogger(__name__)

PACKAGE = "busybox-static"
_COMPLETE = "oneroot-busybox.json"
_PT_INTERP = 3
_PT_DYNAMIC = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class ElfInfo:
    """The parts of an ELF header that decide whether a binary runs without a loader."""

    bits: int  # 32 or 64
    machine: int  # e_machine: 62 is x86-64
    interpreter: str | None  # PT_INTERP, e.g. /lib64/ld-linux-x86-64.so.2
    has_dynamic: bool  # a PT_DYNAMIC segment (shared libraries, or a static-pie's relocations)

    @property
    def is_static(self) -> bool:
        """Runs with no program interpreter (static, or static-pie)."""
        return self.interpreter is None


def read_elf(path: Path) -> ElfInfo:
    """Parse the ELF identification and program headers of `path`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BuildError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_elf(data, what=str(path))


def parse_elf(data: bytes, *, what: str = "binary") -> ElfInfo:
    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise BuildError(f"{what} is not an ELF binary")
    ei_class, ei_data = data[4], data[5]
    if ei_class not in (1, 2) or ei_data not in (1, 2):
        raise BuildError(f"{what}: unknown ELF class {ei_class} or byte order {ei_data}")
    end = "<" if ei_data == 1 else ">"
    try:
        if ei_class == 2:
            machine, = struct.unpack_from(end + "H", data, 18)
            phoff, = struct.unpack_from(end + "Q", data, 32)
            phentsize, phnum = struct.unpack_from(end + "HH", data, 54)
        else:
            machine, = struct.unpack_from(end + "H", data, 18)
            phoff, = struct.unpack_from(end + "I", data, 28)
            phentsize, phnum = struct.unpack_from(end + "HH", data, 42)
        interpreter: str | None = None
        has_dynamic = False
        for i in range(phnum):
            at = phoff + i * phentsize
            if ei_class == 2:
                p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(
                    end + "IIQQQQ", data, at)
            else:
                p_type, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(
                    end + "IIIII", data, at)
            if p_type == _PT_INTERP:
                raw = data[p_offset:p_offset + p_filesz]
                if len(raw) != p_filesz:
                    raise BuildError(f"{what}: truncated PT_INTERP")
                interpreter = raw.split(b"\0", 1)[0].decode(errors="replace")
            elif p_type == _PT_DYNAMIC:
                has_dynamic = True
    except struct.error as exc:
        raise BuildError(f"{what}: truncated ELF program headers") from exc
    return ElfInfo(bits=32 if ei_class == 1 else 64, machine=machine, interpreter=interpreter,
                   has_dynamic=has_dynamic)


@dataclass(frozen=True, slots=True, kw_only=True)
class Busybox:
    path: Path
    package_version: str

    def applets(self) -> list[str]:
        """The applet names this binary provides (`busybox --list`)."""
        out = run_tool([str(self.path), "--list"])
        return sorted(line.strip() for line in out.splitlines() if line.strip())


def candidate_version(package: str = PACKAGE) -> str:
    out = run_tool(["apt-cache", "show", "--no-all-versions", package],
               hint="run `apt-get update`")
    m = re.search(r"^Version:\s*(\S+)", out, re.MULTILINE)
    if not m:
        raise ExternalToolError(f"apt-cache knows no version of {package}",
                                hint="run `apt-get update`")
    return m.group(1)


def fetch_busybox(*, cache_dir: Path, package_version: str | None = None) -> Busybox:
    """Download busybox-static into `<cache_dir>/busybox/<version>/`, verify it is static."""
    base = cache_dir / "busybox"
    version = package_version or remembered_apt_answer(base / "candidate.json", PACKAGE,
                                                       candidate_version)
    dest = base / _safe(version)
    if (dest / _COMPLETE).is_file():
        return verified_busybox(dest, version)
    base.mkdir(parents=True, exist_ok=True)
    with file_lock(base / ".lock"):
        if (dest / _COMPLETE).is_file():
            return verified_busybox(dest, version)
        with tempfile.TemporaryDirectory(dir=base, prefix=".fetch-") as tmp_name:
            tmp = Path(tmp_name)
            deb = apt_download(PACKAGE, tmp)
            got = run_tool(["dpkg-deb", "-f", str(deb), "Version"]).strip()
            if package_version is not None and got != package_version:
                raise ExternalToolError(f"apt-get downloaded {PACKAGE} {got}, not {version}")
            tree = tmp / "tree"
            run_tool(["dpkg-deb", "-x", str(deb), str(tree)])
            verified_busybox(tree, got)
            (tree / _COMPLETE).write_text(json.dumps({"package_version": got}) + "\n")
            dest = base / _safe(got)
            if dest.exists():
                shutil.rmtree(dest)
            tree.rename(dest)
        log.info("busybox.fetched version=%s dir=%s", got, dest)
        return verified_busybox(dest, got)


def verified_busybox(tree: Path, version: str) -> Busybox:
    """The busybox unpacked under `tree`, if it is static; BuildError otherwise."""
    candidates = [tree / "bin" / "busybox", tree / "usr" / "bin" / "busybox"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise BuildError(f"{tree} holds no bin/busybox")
    info = read_elf(path)
    if not info.is_static:
        raise BuildError(f"{path} is dynamically linked (interpreter {info.interpreter})",
                         hint=f"the initramfs needs the static build from {PACKAGE}")
    return Busybox(path=path, package_version=version)


def _safe(version: str) -> str:
    """Debian versions carry epochs (`1:1.35.0-4`): keep directory names free of colons."""
    return version.replace(":", "_")
