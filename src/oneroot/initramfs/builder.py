"""The node initramfs: dracut-style modules (`initramfs/modules/NN-name/`) assembled into a
reproducible cpio with busybox, the kernel modules a netbooted node needs, and fuse-overlayfs.

Owns the module layout and the assembly; the archive format is `cpio`, the kernel cache and the
module closure are `kernel`, the static busybox is `busybox`.

A module is a directory `NN-name/` holding:

    module.toml        what it needs (every key optional):
                         description = "..."
                         depends = ["00-base", ...]         modules whose functions it uses or
                                                            replaces: they come first
                         applets = ["udhcpc", ...]          busybox applets it uses (checked)
                         binaries = ["/usr/bin/fuse-overlayfs"]   host ELF files, + ldd closure
                         kernel_modules = ["nfsv4", ...]    loaded at the modules stage, in order
                         [[files]] src = "x" dest = "lib/oneroot/x" mode = 0o755
                         [[symlinks]] path = "usr/bin/@fuse-overlayfs" target = "fuse-overlayfs"
                         [[devices]] path = "dev/console" kind = "char" major = 5 minor = 1
    lib.sh             functions, sourced by /init         -> lib/oneroot/lib/NN-name.sh
    hooks/STAGE.sh     run by /init at STAGE, module order -> lib/oneroot/hooks/STAGE/NN-name.sh

Module order follows `depends` (a missing or circular dependency is a build error); modules
that do not depend on each other keep name order. The builder writes the order and the stages
(`oneroot.model.events.INITRAMFS_STAGES`) into lib/oneroot/generated.sh, which /init sources
first: ONEROOT_MODULES orders the libraries and the hooks, ONEROOT_STAGES the stages.

    report = build_initramfs(kernel=fetch_kernel(cache_dir=c), busybox=fetch_busybox(cache_dir=c),
                             out=Path("initrd.img"), compression="zstd")

Reproducible: every input is read in sorted order, modes are fixed by kind (not taken from the
build host's umask), mtimes are `mtime` (0 or SOURCE_DATE_EPOCH), and compression is
deterministic (cpio.py), so the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import os
import re
import subprocess
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from oneroot.errors import BuildError, ExternalToolError
from oneroot.initramfs.busybox import Busybox, read_elf
from oneroot.initramfs.cpio import Compression, CpioArchive
from oneroot.initramfs.kernel import Kernel, ModuleIndex, install_modules, module_name
from oneroot.model.events import INITRAMFS_STAGES

log = logging.getLogger(__name__)

MODULES_ROOT = Path(__file__).parent / "modules"
STAGES = INITRAMFS_STAGES
LIB_DIR = "lib/oneroot"
GENERATED_SH = f"{LIB_DIR}/generated.sh"
MODULE_LIST = "etc/oneroot/modules"
_MODULE_DIR_RE = re.compile(r"^[0-9]{2}-[a-z0-9][a-z0-9-]*$")
_LDD_LINE = re.compile(r"^\s*(?:(\S+)\s+=>\s+)?(\S+)?\s*\(0x[0-9a-fA-F]+\)\s*$")
# Standard directories of the image; sbin is bin, so the kernel's /sbin/modprobe is busybox's.
_DIRS = ("bin", "dev", "etc", "lib", "proc", "root", "run", "sys", "sysroot", "tmp", "usr/bin")
_SYMLINKS = (("sbin", "bin"), ("usr/sbin", "../bin"), ("etc/mtab", "/proc/self/mounts"))

Progress = Callable[[str, int, int], None]
"""`progress(step, done, total)`: called before each step and once at the end (done == total)."""

_STEPS = ("modules", "busybox", "binaries", "kernel modules", "scripts", "compress")


@dataclass(frozen=True, slots=True, kw_only=True)
class FileSpec:
    src: str
    dest: str
    mode: int = 0o644


@dataclass(frozen=True, slots=True, kw_only=True)
class SymlinkSpec:
    path: str
    target: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSpec:
    path: str
    kind: Literal["char", "block"]
    major: int
    minor: int
    mode: int = 0o600


@dataclass(frozen=True, slots=True, kw_only=True)
class InitramfsModule:
    """One `modules/NN-name/` directory, read."""

    name: str  # "20-net"
    directory: Path
    description: str = ""
    applets: tuple[str, ...] = ()
    binaries: tuple[Path, ...] = ()
    kernel_modules: tuple[str, ...] = ()
    files: tuple[FileSpec, ...] = ()
    symlinks: tuple[SymlinkSpec, ...] = ()
    devices: tuple[DeviceSpec, ...] = ()
    hooks: tuple[str, ...] = ()  # stages this module has a hook for, in STAGES order
    has_lib: bool = False
    depends: tuple[str, ...] = ()  # modules that come before this one


@dataclass(frozen=True, slots=True, kw_only=True)
class SizePart:
    """Uncompressed bytes of one kind of content, for the size report."""

    name: str
    files: int
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildReport:
    path: Path
    size: int  # bytes of the (compressed) file
    content: int  # bytes of file content in the archive, before compression
    files: int  # archive entries (files, directories, links, device nodes)
    modules: tuple[str, ...]  # kernel modules in the image, in load order
    sha256: str
    kernel_version: str
    compression: Compression
    parts: tuple[SizePart, ...] = field(default=())


# -- modules -------------------------------------------------------------------------------


def load_modules(root: Path = MODULES_ROOT) -> list[InitramfsModule]:
    """Every `NN-name/` under `root`, in module order (`order_modules`)."""
    if not root.is_dir():
        raise BuildError(f"{root} holds no initramfs modules")
    found = sorted(p for p in root.iterdir() if p.is_dir() and _MODULE_DIR_RE.match(p.name))
    return order_modules([load_module(p) for p in found])


def order_modules(modules: Sequence[InitramfsModule]) -> list[InitramfsModule]:
    """`modules` with each after the ones it depends on; otherwise in name order."""
    by_name = {m.name: m for m in modules}
    for m in modules:
        for dep in m.depends:
            if dep not in by_name:
                raise BuildError(f"initramfs module {m.name} depends on {dep}, which is not a "
                                 "module", hint=f"modules: {', '.join(sorted(by_name))}")
    waiting = {m.name: set(m.depends) for m in modules}
    ready = [name for name, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    ordered: list[InitramfsModule] = []
    while ready:
        name = heapq.heappop(ready)
        ordered.append(by_name[name])
        for other, deps in waiting.items():
            if name in deps:
                deps.discard(name)
                if not deps:
                    heapq.heappush(ready, other)
    if len(ordered) < len(modules):
        stuck = sorted(name for name, deps in waiting.items() if deps)
        raise BuildError(f"initramfs modules depend on each other in a cycle: "
                         f"{', '.join(stuck)}", hint="drop one of their `depends`")
    return ordered


def generated_sh(modules: Sequence[InitramfsModule]) -> str:
    """lib/oneroot/generated.sh: the stages and the module order, for /init."""
    return (f"# Generated by oneroot.initramfs.builder: the stages "
            f"(oneroot.model.events.INITRAMFS_STAGES)\n# and the modules in `depends` order.\n"
            f"ONEROOT_STAGES='{' '.join(STAGES)}'\n"
            f"ONEROOT_MODULES='{' '.join(m.name for m in modules)}'\n")


def load_module(directory: Path) -> InitramfsModule:
    conf = directory / "module.toml"
    try:
        data = tomllib.loads(conf.read_text())
    except FileNotFoundError as exc:
        raise BuildError(f"initramfs module {directory.name} has no module.toml",
                         hint=f"create {conf}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise BuildError(f"{conf}: {exc}") from exc
    known = {"description", "depends", "applets", "binaries", "kernel_modules", "files",
             "symlinks", "devices"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BuildError(f"{conf}: unknown keys {', '.join(unknown)}",
                         hint=f"module.toml takes {', '.join(sorted(known))}")
    hooks_dir = directory / "hooks"
    hook_stages = sorted(p.stem for p in hooks_dir.glob("*.sh")) if hooks_dir.is_dir() else []
    for stage in hook_stages:
        if stage not in STAGES:
            raise BuildError(f"{directory.name}: hooks/{stage}.sh names no stage",
                             hint=f"stages are {', '.join(STAGES)}")
    try:
        files = tuple(FileSpec(src=str(f["src"]), dest=str(f["dest"]),
                               mode=int(f.get("mode", 0o644)))
                      for f in data.get("files", []))
        symlinks = tuple(SymlinkSpec(path=str(s["path"]), target=str(s["target"]))
                         for s in data.get("symlinks", []))
        devices = tuple(_device(d) for d in data.get("devices", []))
    except (KeyError, TypeError, ValueError) as exc:
        raise BuildError(f"{conf}: bad files/symlinks/devices entry ({exc})") from exc
    for f in files:
        if not (directory / f.src).is_file():
            raise BuildError(f"{directory.name}: file {f.src} is missing")
    return InitramfsModule(
        name=directory.name,
        directory=directory,
        description=str(data.get("description", "")),
        applets=_strings(data, "applets", conf),
        binaries=tuple(Path(b) for b in _strings(data, "binaries", conf)),
        kernel_modules=_strings(data, "kernel_modules", conf),
        files=files,
        symlinks=symlinks,
        devices=devices,
        hooks=tuple(s for s in STAGES if s in hook_stages),
        has_lib=(directory / "lib.sh").is_file(),
        depends=_strings(data, "depends", conf),
    )


def _strings(data: dict[str, object], key: str, conf: Path) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BuildError(f"{conf}: {key} must be a list of strings")
    return tuple(str(v) for v in value)


def _device(d: dict[str, object]) -> DeviceSpec:
    kind = d["kind"]
    if kind not in ("char", "block"):
        raise ValueError(f"device kind {kind!r} is neither char nor block")
    return DeviceSpec(path=str(d["path"]), kind="char" if kind == "char" else "block",
                      major=int(str(d["major"])), minor=int(str(d["minor"])),
                      mode=int(str(d.get("mode", 0o600))))


def boot_module_names(modules: Sequence[InitramfsModule], extra: Iterable[str] = ()) -> list[str]:
    """Kernel modules to load at boot: each module's list in module order, then `extra`."""
    names: list[str] = []
    for name in [n for m in modules for n in m.kernel_modules] + list(extra):
        canonical = name.replace("-", "_")
        if canonical not in names:
            names.append(canonical)
    return names


# -- shared libraries ------------------------------------------------------------------------


def parse_ldd(output: str) -> list[Path]:
    """The libraries (and loader) `ldd` lists, in its order; the vDSO is skipped."""
    found: list[Path] = []
    for line in output.splitlines():
        if "not found" in line:
            name = line.split("=>", 1)[0].strip()
            raise BuildError(f"shared library {name} is not installed",
                             hint="install the package that provides it")
        m = _LDD_LINE.match(line)
        if m is None or m.group(2) is None:
            continue
        path = m.group(2)
        if path.startswith("/"):
            found.append(Path(path))
    return found


def library_closure(binary: Path) -> list[Path]:
    """The shared libraries `binary` needs at run time (ldd), loader included; [] if static."""
    if read_elf(binary).is_static:
        return []
    try:
        result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True,
                                check=False, env={"LC_ALL": "C", "PATH": os.defpath})
    except FileNotFoundError as exc:
        raise ExternalToolError("ldd is not installed", hint="apt-get install libc-bin") from exc
    if result.returncode != 0:
        raise ExternalToolError(f"ldd {binary} failed: {result.stderr.strip()}")
    return parse_ldd(result.stdout)


# -- the build -------------------------------------------------------------------------------


def build_archive(*, kernel: Kernel, busybox: Busybox, modules: Sequence[InitramfsModule],
                  extra_nics: Sequence[str] = (), workdir: Path,
                  progress: Progress | None = None) -> tuple[CpioArchive, list[str],
                                                             list[SizePart]]:
    """The archive (not yet written), the kernel modules in it, and sizes by part."""
    archive = CpioArchive()
    parts: list[SizePart] = []

    def step(i: int) -> None:
        if progress is not None:
            progress(_STEPS[i], i, len(_STEPS))

    for d in _DIRS:
        archive.add_dir(d)
    for path, target in _SYMLINKS:
        archive.add_symlink(path, target)

    step(1)
    applets = set(busybox.applets())
    wanted = sorted({a for m in modules for a in m.applets})
    missing = [a for a in wanted if a not in applets]
    if missing:
        raise BuildError(f"busybox {busybox.package_version} lacks the applets "
                         f"{', '.join(missing)}", hint="use Debian's busybox-static")
    archive.add_file_from("bin/busybox", busybox.path, mode=0o755)
    for applet in sorted(applets - {"busybox"}):
        archive.add_symlink(f"bin/{applet}", "busybox")
    parts.append(SizePart(name="busybox", files=1, size=busybox.path.stat().st_size))

    step(2)
    binaries = [b for m in modules for b in m.binaries]
    libraries: dict[str, Path] = {}
    for binary in binaries:
        if not binary.is_file():
            raise BuildError(f"{binary} is not installed on the build host",
                             hint="install it (fuse-overlayfs: apt-get install fuse-overlayfs)")
        archive.add_file_from(str(binary), binary.resolve(), mode=0o755)
        for lib in library_closure(binary):
            libraries.setdefault(str(lib), lib)
    for dest in sorted(libraries):
        archive.add_file_from(dest, libraries[dest].resolve(), mode=0o755)
    parts.append(SizePart(name="binaries", files=len(binaries),
                          size=sum(b.resolve().stat().st_size for b in binaries)))
    parts.append(SizePart(name="shared libraries", files=len(libraries),
                          size=sum(p.resolve().stat().st_size for p in libraries.values())))

    step(3)
    names = boot_module_names(modules, extra_nics)
    index = ModuleIndex.load(kernel.modules_dir)
    loadable = [n for n in names if n in index.deps or n in index.aliases]
    builtin = [n for n in names if n not in loadable]
    unknown = [n for n in builtin if n not in index.builtin]
    if unknown:
        raise BuildError(f"kernel {kernel.version} has no modules {', '.join(unknown)}",
                         hint="check the names against its modules.dep (extra_nics / --nic)")
    staging = workdir / "kmod"
    installed = install_modules(kernel.modules_dir, loadable, dest_root=staging)
    ko_size = _add_module_tree(archive, staging, kernel.version)
    parts.append(SizePart(name="kernel modules", files=len(installed), size=ko_size))
    listing = "".join(f"{n}\n" for n in loadable)
    archive.add_file(MODULE_LIST, (
        f"# Generated by oneroot.initramfs.builder for kernel {kernel.version}: loaded in order\n"
        f"# at the modules stage (built in: {' '.join(builtin) or 'none'}).\n{listing}"
    ).encode())

    step(4)
    script_size = add_scripts(archive, modules)
    parts.append(SizePart(name="scripts", files=sum(1 for _ in _script_files(modules)),
                          size=script_size))
    archive.add_file("etc/oneroot/build", (
        "# Generated by oneroot.initramfs.builder.\n"
        f"kernel={kernel.version}\nbusybox={busybox.package_version}\n"
        f"modules={' '.join(m.name for m in modules)}\n").encode())
    for m in modules:
        for dev in m.devices:
            if dev.kind == "char":
                archive.add_char_device(dev.path, dev.major, dev.minor, mode=dev.mode)
            else:
                archive.add_block_device(dev.path, dev.major, dev.minor, mode=dev.mode)
    return archive, [module_name(p) for p in installed], parts


def _add_module_tree(archive: CpioArchive, staging: Path, version: str) -> int:
    """lib/modules/<version> from the staging tree, with fixed modes; returns the .ko bytes."""
    base = staging / "lib" / "modules" / version
    total = 0
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        here = Path(dirpath)
        rel = PurePosixPath("lib/modules", version, here.relative_to(base).as_posix())
        archive.add_dir(str(rel))
        for name in sorted(filenames):
            path = here / name
            archive.add_file(str(rel / name), path.read_bytes(), mode=0o644)
            if name.endswith(".ko"):
                total += path.stat().st_size
    return total


def _script_files(modules: Sequence[InitramfsModule]) -> Iterable[tuple[str, bytes, int]]:
    """(archive path, content, mode) of every script and file the modules install."""
    yield GENERATED_SH, generated_sh(modules).encode(), 0o644
    for m in modules:
        if m.has_lib:
            yield f"{LIB_DIR}/lib/{m.name}.sh", (m.directory / "lib.sh").read_bytes(), 0o644
        for stage in m.hooks:
            hook = m.directory / "hooks" / f"{stage}.sh"
            yield f"{LIB_DIR}/hooks/{stage}/{m.name}.sh", hook.read_bytes(), 0o644
        for f in m.files:
            yield f.dest, (m.directory / f.src).read_bytes(), f.mode


def add_scripts(archive: CpioArchive, modules: Sequence[InitramfsModule]) -> int:
    """/init, the module libraries, hooks, files and symlinks; returns their bytes."""
    total = 0
    for dest, data, mode in _script_files(modules):
        archive.add_file(dest, data, mode=mode)
        total += len(data)
    for m in modules:
        for link in m.symlinks:
            archive.add_symlink(link.path, link.target)
    return total


def write_script_tree(root: Path, modules: Sequence[InitramfsModule] | None = None) -> Path:
    """Lay out /init and lib/oneroot/ under `root` on the host (tests run them under busybox sh
    with ONEROOT_LIB=root/lib/oneroot); returns the path of init."""
    for dest, data, mode in _script_files(load_modules() if modules is None else modules):
        target = root / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(mode)
    return root / "init"


def build_initramfs(*, kernel: Kernel, busybox: Busybox, out: Path,
                    compression: Compression | Literal["gzip", "zstd"] = Compression.GZIP,
                    extra_nics: Sequence[str] = (), progress: Progress | None = None,
                    modules_root: Path = MODULES_ROOT, mtime: int = 0,
                    level: int | None = None) -> BuildReport:
    """Build the node initramfs for `kernel` into `out` (written atomically).

    `extra_nics` adds NIC driver modules (e.g. "igb", "ixgbe") to the default virtio/e1000 set.
    `mtime` stamps every entry (SOURCE_DATE_EPOCH); the bytes depend only on the inputs.
    `level` is the compression level (default: gzip 9, zstd 19).
    """
    comp = Compression(compression)
    if comp is Compression.NONE:
        raise BuildError("an initramfs is compressed", hint="use gzip or zstd")
    if progress is not None:
        progress(_STEPS[0], 0, len(_STEPS))
    modules = load_modules(modules_root)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".oneroot-initramfs-", dir=out.parent) as tmp:
        archive, installed, parts = build_archive(
            kernel=kernel, busybox=busybox, modules=modules, extra_nics=extra_nics,
            workdir=Path(tmp), progress=progress)
        if progress is not None:
            progress(_STEPS[5], 5, len(_STEPS))
        content = sum(e.size() for e in archive.entries())
        size = archive.write(out, compression=comp, level=level, mtime=mtime)
    digest = hashlib.sha256()
    with out.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    if progress is not None:
        progress("done", len(_STEPS), len(_STEPS))
    report = BuildReport(path=out, size=size, content=content, files=len(archive),
                         modules=tuple(installed), sha256=digest.hexdigest(),
                         kernel_version=kernel.version, compression=comp, parts=tuple(parts))
    log.info("initramfs.built path=%s size=%d files=%d modules=%d sha256=%s", out, size,
             report.files, len(installed), report.sha256)
    return report

