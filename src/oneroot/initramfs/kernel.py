"""Distro kernels for nodes: fetched as Debian packages into a cache, never from /boot.

Owns the kernel cache (`<cache>/kernels/<version>/`, the package unpacked with `dpkg-deb -x`
and its `modules.dep` generated with `depmod -b`) and the kernel-module closure an initramfs
needs (from `modules.dep`; plain, `.xz`, `.zst` or `.gz` modules, decompressed on install).

    kernel = fetch_kernel(cache_dir=default_cache_dir())          # linux-image-amd64's version
    paths = module_closure(kernel.modules_dir, ["virtio_net", "nfsv4"])
    install_modules(kernel.modules_dir, ["virtio_net"], dest_root=staging)  # + depmod -b
"""

from __future__ import annotations

import fcntl
import gzip
import json
import logging
import lzma
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from oneroot.errors import BuildError, ExternalToolError

log = logging.getLogger(__name__)

META_PACKAGE = "linux-image-amd64"
APT_LISTS = Path("/var/lib/apt/lists")
_COMPLETE = "oneroot-kernel.json"  # written last: its presence means the unpack finished
_MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
_VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+~_-]*$")
# Files `depmod` and `modprobe` read besides the modules themselves.
_MODULE_METADATA = ("modules.builtin", "modules.builtin.modinfo", "modules.order")


@dataclass(frozen=True, slots=True, kw_only=True)
class Kernel:
    """An unpacked kernel: `version` is the uname -r string (`6.1.0-56-amd64`)."""

    version: str
    root: Path
    vmlinuz: Path
    modules_dir: Path
    system_map: Path | None
    config: Path | None
    package_version: str | None = None

    @classmethod
    def from_tree(cls, root: Path, version: str | None = None) -> Kernel:
        """A kernel unpacked under `root` (boot/vmlinuz-V, lib/modules/V), e.g. by hand."""
        boot = root / "boot"
        if version is None:
            found = sorted(p.name.removeprefix("vmlinuz-") for p in boot.glob("vmlinuz-*"))
            if len(found) != 1:
                raise BuildError(
                    f"{root}: expected one boot/vmlinuz-*, found {len(found)}",
                    hint="name the kernel version explicitly",
                )
            version = found[0]
        vmlinuz = boot / f"vmlinuz-{version}"
        modules_dir = _modules_dir(root, version)
        if not vmlinuz.is_file() or not modules_dir.is_dir():
            raise BuildError(
                f"{root} does not hold kernel {version} (boot/vmlinuz-{version} and "
                f"lib/modules/{version})",
                hint="unpack a linux-image package there with `dpkg-deb -x`",
            )
        system_map = boot / f"System.map-{version}"
        config = boot / f"config-{version}"
        return cls(version=version, root=root, vmlinuz=vmlinuz, modules_dir=modules_dir,
                   system_map=system_map if system_map.is_file() else None,
                   config=config if config.is_file() else None)


def default_cache_dir() -> Path:
    """`~/.cache/oneroot`; callers with settings pass their own directory instead."""
    return Path.home() / ".cache" / "oneroot"


def resolve_kernel_version(meta_package: str = META_PACKAGE) -> str:
    """The kernel version Debian's meta package currently depends on (`6.1.0-56-amd64`)."""
    out = run_tool(["apt-cache", "depends", meta_package],
               hint="run `apt-get update`, or pass the kernel version explicitly")
    for line in out.splitlines():
        m = re.match(r"\s*Depends:\s*linux-image-(\S+)", line)
        if m and _VERSION_RE.match(m.group(1)):
            return m.group(1)
    raise BuildError(f"{meta_package} depends on no linux-image-<version> package",
                     hint="pass the kernel version explicitly")


def fetch_kernel(version: str | None = None, *, cache_dir: Path) -> Kernel:
    """Download and unpack `linux-image-<version>` into `<cache_dir>/kernels/` (once).

    Without a version, the one `linux-image-amd64` depends on now. Nothing outside the cache is
    touched: no /boot, no dpkg database, no maintainer scripts.
    """
    if version is None:
        version = remembered_apt_answer(cache_dir / "kernels" / "resolved.json", META_PACKAGE,
                                        resolve_kernel_version)
    if not _VERSION_RE.match(version):
        raise BuildError(f"{version!r} is not a kernel version", hint="e.g. 6.1.0-56-amd64")
    kernels = cache_dir / "kernels"
    dest = kernels / version
    if (dest / _COMPLETE).is_file():
        return _cached(dest, version)
    kernels.mkdir(parents=True, exist_ok=True)
    with file_lock(kernels / ".lock"):
        if (dest / _COMPLETE).is_file():  # another process finished while we waited
            return _cached(dest, version)
        package = f"linux-image-{version}"
        with tempfile.TemporaryDirectory(dir=kernels, prefix=".fetch-") as tmp_name:
            tmp = Path(tmp_name)
            deb = apt_download(package, tmp)
            tree = tmp / "tree"
            run_tool(["dpkg-deb", "-x", str(deb), str(tree)])
            package_version = run_tool(["dpkg-deb", "-f", str(deb), "Version"]).strip()
            # The package ships no modules.dep: its postinst runs depmod, which we do here.
            depmod(tree, version)
            Kernel.from_tree(tree, version)  # raises unless the package held a kernel
            meta = {"package": package, "package_version": package_version,
                    "deb": deb.name}
            (tree / _COMPLETE).write_text(json.dumps(meta, indent=2) + "\n")
            if dest.exists():  # a half-finished unpack from a crash
                shutil.rmtree(dest)
            tree.rename(dest)
        log.info("kernel.fetched version=%s package_version=%s dir=%s", version,
                 package_version, dest)
        return _cached(dest, version)


def remembered_apt_answer(record: Path, key: str, ask: Callable[[], str], *,
                          apt_lists: Path = APT_LISTS) -> str:
    """`ask()` (an apt-cache query), remembered in `record` until `apt-get update` changes
    the package lists: apt-cache costs a second, which would make every cached fetch slow."""
    try:
        stamp = apt_lists.stat().st_mtime_ns
    except OSError:
        stamp = -1
    try:
        known = json.loads(record.read_text())
        if known.get("key") == key and known.get("apt_lists") == stamp:
            return str(known["answer"])
    except (OSError, ValueError, KeyError):
        pass
    answer = ask()
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_name(f".{record.name}.tmp")
    tmp.write_text(json.dumps({"key": key, "apt_lists": stamp, "answer": answer}) + "\n")
    tmp.replace(record)
    return answer


def _cached(dest: Path, version: str) -> Kernel:
    kernel = Kernel.from_tree(dest, version)
    meta = json.loads((dest / _COMPLETE).read_text())
    return Kernel(version=kernel.version, root=kernel.root, vmlinuz=kernel.vmlinuz,
                  modules_dir=kernel.modules_dir, system_map=kernel.system_map,
                  config=kernel.config, package_version=meta.get("package_version"))


def apt_download(package: str, directory: Path) -> Path:
    """`apt-get download PACKAGE` into `directory`; returns the .deb's path."""
    directory.mkdir(parents=True, exist_ok=True)
    # As root, apt drops to the _apt user, who cannot write into a private directory.
    run_tool(["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", package],
         cwd=directory, hint=f"run `apt-get update`; is {package} in the configured sources?")
    debs = sorted(directory.glob(f"{package}_*.deb"))
    if len(debs) != 1:
        raise ExternalToolError(f"apt-get download {package} left {len(debs)} .deb files")
    return debs[0]


def depmod(root: Path, version: str) -> None:
    """Generate modules.dep (and its .bin indexes) for `root/lib/modules/<version>`."""
    run_tool(["depmod", "-b", str(root), version], hint="apt-get install kmod")


def module_name(path: str | Path) -> str:
    """`kernel/fs/fuse/fuse.ko.xz` → `fuse`; dashes read as underscores, as modprobe does."""
    name = Path(path).name
    for suffix in _MODULE_SUFFIXES[::-1]:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.replace("-", "_")


@dataclass(frozen=True, slots=True)
class ModuleIndex:
    """What `modules.dep`, `modules.builtin` and `modules.alias` say about a module tree."""

    deps: dict[str, tuple[str, list[str]]]  # name → (relative path, relative dep paths)
    builtin: frozenset[str]
    aliases: dict[str, str]  # exact (non-glob) alias → module name

    @classmethod
    def load(cls, moddir: Path) -> ModuleIndex:
        dep_file = moddir / "modules.dep"
        if not dep_file.is_file():
            raise BuildError(f"{dep_file} is missing",
                             hint=f"generate it with `depmod -b <root> {moddir.name}`")
        deps: dict[str, tuple[str, list[str]]] = {}
        for line in dep_file.read_text().splitlines():
            if ":" not in line:
                continue
            target, _, rest = line.partition(":")
            deps[module_name(target)] = (target.strip(), rest.split())
        builtin_file = moddir / "modules.builtin"
        builtin = frozenset(
            module_name(line) for line in
            (builtin_file.read_text().split() if builtin_file.is_file() else [])
        )
        aliases: dict[str, str] = {}
        alias_file = moddir / "modules.alias"
        if alias_file.is_file():
            for line in alias_file.read_text().splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0] == "alias" and not any(
                        c in parts[1] for c in "*?["):
                    aliases.setdefault(parts[1].replace("-", "_"), parts[2].replace("-", "_"))
        return cls(deps=deps, builtin=builtin, aliases=aliases)

    def closure(self, names: Iterable[str]) -> list[str]:
        """Relative paths of `names` and everything they depend on, dependencies first.

        Built-in modules are skipped (nothing to load); unknown names raise BuildError.
        """
        order: list[str] = []
        seen: set[str] = set()
        path_to_name = {path: name for name, (path, _) in self.deps.items()}

        def visit(name: str) -> None:
            if name in seen:
                return
            seen.add(name)
            path, dep_paths = self.deps[name]
            # modprobe loads the last-listed dependency first.
            for dep in reversed(dep_paths):
                visit(path_to_name.get(dep, module_name(dep)))
            order.append(path)

        for raw in names:
            name = raw.replace("-", "_")
            if name not in self.deps and name in self.aliases:
                name = self.aliases[name]
            if name in self.deps:
                visit(name)
            elif name not in self.builtin:
                raise BuildError(f"no kernel module named {raw!r}",
                                 hint="check the name against modules.dep of this kernel")
        return order


def module_closure(moddir: Path, names: Iterable[str]) -> list[Path]:
    """Absolute paths of the named modules and their dependencies, in load order."""
    return [moddir / rel for rel in ModuleIndex.load(moddir).closure(names)]


def install_modules(moddir: Path, names: Iterable[str], *, dest_root: Path) -> list[Path]:
    """Copy the closure of `names` to `dest_root/lib/modules/<version>/`, decompressed, and
    regenerate modules.dep there with `depmod -b`; returns the installed modules in load order.
    """
    version = moddir.name
    target_dir = dest_root / "lib" / "modules" / version
    target_dir.mkdir(parents=True, exist_ok=True)
    installed: list[Path] = []
    for rel in ModuleIndex.load(moddir).closure(names):
        plain = _strip_compression(rel)
        dest = target_dir / plain
        dest.parent.mkdir(parents=True, exist_ok=True)
        _decompress_into(moddir / rel, dest)
        installed.append(dest)
    for name in _MODULE_METADATA:
        if (moddir / name).is_file():
            shutil.copyfile(moddir / name, target_dir / name)
    depmod(dest_root, version)
    return installed


def _strip_compression(rel: str) -> str:
    for suffix in (".xz", ".zst", ".gz"):
        if rel.endswith(".ko" + suffix):
            return rel[: -len(suffix)]
    return rel


def _decompress_into(src: Path, dest: Path) -> None:
    name = src.name
    if name.endswith(".ko.xz"):
        dest.write_bytes(lzma.decompress(src.read_bytes()))
    elif name.endswith(".ko.gz"):
        dest.write_bytes(gzip.decompress(src.read_bytes()))
    elif name.endswith(".ko.zst"):
        with dest.open("wb") as out:
            run_tool_to(["zstd", "-q", "-d", "-c", str(src)], out, hint="apt-get install zstd")
    else:
        shutil.copyfile(src, dest)


def _modules_dir(root: Path, version: str) -> Path:
    for candidate in (root / "lib" / "modules" / version,
                      root / "usr" / "lib" / "modules" / version):
        if candidate.is_dir():
            return candidate
    return root / "lib" / "modules" / version


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if needed): one fetch per cache at a time."""
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_tool(cmd: list[str], *, cwd: Path | None = None, hint: str | None = None) -> str:
    """Run a program to completion; its stdout, or ExternalToolError with its stderr."""
    try:
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise ExternalToolError(f"{cmd[0]} is not installed", hint=hint) from exc
    if result.returncode != 0:
        raise ExternalToolError(
            f"`{' '.join(cmd)}` failed ({result.returncode}): {result.stderr.strip()}",
            hint=hint)
    return result.stdout


def run_tool_to(cmd: list[str], out: IO[bytes], *, hint: str | None = None) -> None:
    try:
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, check=False)
    except FileNotFoundError as exc:
        raise ExternalToolError(f"{cmd[0]} is not installed", hint=hint) from exc
    if result.returncode != 0:
        raise ExternalToolError(f"`{' '.join(cmd)}` failed: {result.stderr.decode().strip()}",
                                hint=hint)
