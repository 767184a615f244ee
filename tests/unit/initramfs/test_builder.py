"""The initramfs builder: the module layout, the shared-library closure, the archive's content,
and reproducibility (same inputs, shuffled mtimes and file order: same bytes)."""

from __future__ import annotations

import gzip
import os
import random
import shutil
import stat
from pathlib import Path

import pytest

from oneroot.errors import BuildError
from oneroot.initramfs.builder import (
    MODULES_ROOT,
    STAGES,
    BuildReport,
    boot_module_names,
    build_initramfs,
    library_closure,
    load_module,
    load_modules,
    parse_ldd,
)
from oneroot.initramfs.busybox import Busybox, fetch_busybox
from oneroot.initramfs.kernel import Kernel, ModuleIndex, fetch_kernel
from oneroot.testing.cache import suite_cache_dir

# -- the module layout ---------------------------------------------------------------------


def test_modules_are_ordered_and_complete() -> None:
    modules = load_modules()
    names = [m.name for m in modules]
    assert names == sorted(names)
    assert names[:1] == ["00-base"] and "40-rootspec" in names and names[-1] == "90-report"
    hooks = {stage: [m.name for m in modules if stage in m.hooks] for stage in STAGES}
    assert hooks == {"modules": ["10-kmod"], "dhcp": ["20-net"],
                     "layers": ["40-rootspec", "50-nfs"], "union": ["60-union"],
                     "switch_root": ["80-switchroot"]}
    base = modules[0]
    assert any(f.dest == "init" and f.mode == 0o755 for f in base.files)
    assert {d.path for d in base.devices} >= {"dev/console", "dev/null"}


def test_boot_module_names_in_module_order_then_extra_nics() -> None:
    names = boot_module_names(load_modules(), ["igb", "virtio-net"])
    assert names[:2] == ["virtio_pci", "virtio_net"]
    assert names[-1] == "igb"
    assert names.count("virtio_net") == 1
    assert {"nfsv4", "nfsv3", "sunrpc", "lockd", "overlay", "fuse", "loop"} <= set(names)


def test_module_toml_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "30-bad"
    (bad / "hooks").mkdir(parents=True)
    (bad / "module.toml").write_text("binaries = ['/x']\nsurprise = 1\n")
    with pytest.raises(BuildError, match="unknown keys surprise"):
        load_module(bad)
    (bad / "module.toml").write_text("applets = []\n")
    (bad / "hooks/boot.sh").write_text("")
    with pytest.raises(BuildError, match=r"hooks/boot.sh names no stage"):
        load_module(bad)


# -- shared libraries ------------------------------------------------------------------------

LDD = """\
\tlinux-vdso.so.1 (0x00007ffd2b1f2000)
\tlibfuse3.so.3 => /lib/x86_64-linux-gnu/libfuse3.so.3 (0x00007f27b2455000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f27b2273000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f27b24c3000)
"""


def test_parse_ldd() -> None:
    assert parse_ldd(LDD) == [Path("/lib/x86_64-linux-gnu/libfuse3.so.3"),
                              Path("/lib/x86_64-linux-gnu/libc.so.6"),
                              Path("/lib64/ld-linux-x86-64.so.2")]
    with pytest.raises(BuildError, match=r"libfoo\.so\.1 is not installed"):
        parse_ldd("\tlibfoo.so.1 => not found\n")


def test_library_closure_of_fuse_overlayfs() -> None:
    binary = Path("/usr/bin/fuse-overlayfs")
    if not binary.is_file():
        pytest.skip("fuse-overlayfs is not installed")
    libs = [p.name for p in library_closure(binary)]
    assert "libfuse3.so.3" in libs and "libc.so.6" in libs
    assert any(name.startswith("ld-linux") for name in libs)


def test_static_binaries_need_no_libraries(tmp_path: Path) -> None:
    found = shutil.which("busybox") or "/bin/busybox"
    if not Path(found).is_file():
        pytest.skip("no busybox")
    from oneroot.initramfs.busybox import read_elf
    if not read_elf(Path(found)).is_static:
        pytest.skip("the host's busybox is dynamic")
    assert library_closure(Path(found)) == []


# -- builds ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs() -> tuple[Kernel, Busybox]:
    """Debian's kernel and busybox-static from the oneroot cache (fetched once if missing)."""
    if shutil.which("depmod") is None or shutil.which("fuse-overlayfs") is None:
        pytest.skip("needs kmod (depmod) and fuse-overlayfs")
    cache = suite_cache_dir()
    # No apt or no package mirror is a broken install, not a reason to skip: these fail.
    kernel = fetch_kernel(os.environ.get("ONEROOT_KERNEL_VERSION") or None, cache_dir=cache)
    return kernel, fetch_busybox(cache_dir=cache)


def read_newc(data: bytes) -> dict[str, tuple[int, int, int, bytes]]:
    """name -> (mode, rdevmajor, rdevminor, content), checking the fixed mtime and owners."""
    entries: dict[str, tuple[int, int, int, bytes]] = {}
    at = 0
    while True:
        assert data[at:at + 6] == b"070701"
        f = [int(data[at + 6 + 8 * i: at + 14 + 8 * i], 16) for i in range(13)]
        _ino, mode, uid, gid, _nlink, mtime, size, _, _, rmaj, rmin, namesize, _ = f
        name = data[at + 110: at + 110 + namesize - 1].decode()
        at += 110 + namesize
        at += -at % 4
        content = data[at:at + size]
        at += size
        at += -at % 4
        if name == "TRAILER!!!":
            return entries
        assert (uid, gid, mtime) == (0, 0, 0), name
        entries[name] = (mode, rmaj, rmin, content)


def test_build_content(inputs: tuple[Kernel, Busybox], tmp_path: Path) -> None:
    kernel, busybox = inputs
    steps: list[tuple[str, int, int]] = []
    report = build_initramfs(kernel=kernel, busybox=busybox, out=tmp_path / "initrd.img",
                             compression="gzip", extra_nics=["igb"], level=1,
                             progress=lambda s, d, t: steps.append((s, d, t)))
    assert isinstance(report, BuildReport)
    assert steps[0][1] == 0 and steps[-1][1] == steps[-1][2]
    assert report.size == (tmp_path / "initrd.img").stat().st_size < 12_000_000
    entries = read_newc(gzip.decompress((tmp_path / "initrd.img").read_bytes()))
    assert report.files == len(entries)
    mode, *_ = entries["init"]
    assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o755
    mode, major, minor, _ = entries["dev/console"]
    assert stat.S_ISCHR(mode) and (major, minor) == (5, 1)
    assert stat.S_ISLNK(entries["bin/udhcpc"][0]) and entries["bin/udhcpc"][3] == b"busybox"
    assert entries["sbin"][3] == b"bin"
    for path in ("usr/bin/fuse-overlayfs", "lib64/ld-linux-x86-64.so.2",
                 "lib/oneroot/parse-root.sh", "lib/oneroot/hooks/layers/50-nfs.sh",
                 "lib/oneroot/lib/00-base.sh", "lib/oneroot/udhcpc.script",
                 "lib/oneroot/generated.sh"):
        assert path in entries, path
    assert entries["usr/bin/@fuse-overlayfs"][3] == b"fuse-overlayfs"
    moddir = f"lib/modules/{kernel.version}"
    dep = entries[f"{moddir}/modules.dep"][3].decode().splitlines()
    assert len(dep) == len(report.modules)  # only the subset
    kos = [n for n in entries if n.startswith(moddir) and n.endswith(".ko")]
    assert len(kos) == len(report.modules)
    assert {"nfsv4", "overlay", "fuse", "virtio_net", "igb", "sunrpc"} <= set(report.modules)
    listed = [line for line in entries["etc/oneroot/modules"][3].decode().splitlines()
              if not line.startswith("#")]
    index = ModuleIndex.load(kernel.modules_dir)
    assert all(name in index.deps for name in listed)
    assert listed.index("virtio_net") < listed.index("igb")
    assert {p.name for p in report.parts} == {"busybox", "binaries", "shared libraries",
                                              "kernel modules", "scripts"}


def test_unknown_nic_is_refused(inputs: tuple[Kernel, Busybox], tmp_path: Path) -> None:
    kernel, busybox = inputs
    with pytest.raises(BuildError, match="no_such_nic"):
        build_initramfs(kernel=kernel, busybox=busybox, out=tmp_path / "x.img",
                        extra_nics=["no_such_nic"], level=1)
    assert not (tmp_path / "x.img").exists()


def _shuffled_copy(src: Path, dest: Path, rng: random.Random,
                   only: set[Path] | None = None) -> None:
    """Copy files of `src` to `dest` in random order with random mtimes."""
    files = [p for p in src.rglob("*") if p.is_file() and (only is None or p in only)]
    rng.shuffle(files)
    for path in files:
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        target.chmod(rng.choice([0o644, 0o664, 0o600, 0o755]))
        stamp = rng.randrange(1_000_000_000, 1_700_000_000)
        os.utime(target, (stamp, stamp))


def _shuffled_inputs(kernel: Kernel, busybox: Busybox, dest: Path,
                     seed: int) -> tuple[Kernel, Busybox, Path]:
    rng = random.Random(seed)
    index = ModuleIndex.load(kernel.modules_dir)
    needed = {kernel.modules_dir / rel for rel in index.closure(
        boot_module_names(load_modules()))}
    needed |= {p for p in kernel.modules_dir.iterdir() if p.is_file()}
    moddir = dest / "kernel/lib/modules" / kernel.version
    _shuffled_copy(kernel.modules_dir, moddir, rng, only=needed)
    (dest / "kernel/boot").mkdir(parents=True)
    (dest / "kernel/boot" / kernel.vmlinuz.name).symlink_to(kernel.vmlinuz)
    copy = Kernel.from_tree(dest / "kernel", kernel.version)
    (dest / "bb").mkdir()
    shutil.copy(busybox.path, dest / "bb/busybox")
    os.utime(dest / "bb/busybox", (rng.randrange(10**9), rng.randrange(10**9)))
    _shuffled_copy(MODULES_ROOT, dest / "modules", rng)
    return copy, Busybox(path=dest / "bb/busybox", package_version=busybox.package_version), \
        dest / "modules"


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_reproducible(inputs: tuple[Kernel, Busybox], tmp_path: Path, compression: str) -> None:
    if compression == "zstd" and shutil.which("zstd") is None:
        pytest.skip("zstd is not installed")
    kernel, busybox = inputs
    reports = []
    for seed in (1, 2):
        k, bb, modules_root = _shuffled_inputs(kernel, busybox, tmp_path / f"in{seed}", seed)
        out = tmp_path / f"out{seed}" / "initrd.img"
        reports.append(build_initramfs(kernel=k, busybox=bb, out=out,
                                       compression="zstd" if compression == "zstd" else "gzip",
                                       modules_root=modules_root, level=3))
    first, second = reports
    assert first.sha256 == second.sha256
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.modules == second.modules
