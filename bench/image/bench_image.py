"""Image-version benchmark: the time and disk space to make a new version of an image after an
`apt-get install` of one package, for a ~300 MB and a ~1.5 GB image, by each way of copying.

    .venv/bin/python bench/image/bench_image.py [--sizes 300,1500] [--repeat 3]

Every method runs on a private loop-mounted filesystem (ext4, and btrfs for reflinks), so the
space is the filesystem's own used-bytes delta (after syncfs), with no other writer on it.
The package is a local .deb built here with dpkg-deb (2 MiB of data, no dependencies): no
network. The image is the lab's cached mmdebstrap root, padded with host files under
/opt/filler to the size asked for. Methods:
- `oneroot version`: `exec_new_version` (an overlay over the parent while apt runs, then a
  hardlink farm of the parent with the upper layer moved in);
- `cp -a`, `rsync -aHAX`: a full copy, then apt in a chroot of the copy;
- `cp --reflink`: on btrfs, a reflink copy, then apt;
- `overlay stack`: apt in an overlay, and the upper layer kept as the version (no flatten).
Writes bench/results/image.md and image.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from oneroot.initramfs.kernel import default_cache_dir
from oneroot.inventory.sqlstore import SqlInventory
from oneroot.model import Image, InitSystem, Settings
from oneroot.model.inventory import Inventory, plan
from oneroot.model.paths import Paths
from oneroot.ops.image_build import exec_new_version, run_in_overlay
from oneroot.ops.image_exec import CHROOT_ENV, chroot_ready
from oneroot.ops.image_versions import abandon_version, find_image
from oneroot.testing.inventory import make_inventory

RESULTS = Path(__file__).resolve().parents[1] / "results"
DEB_IN_IMAGE = "opt/bench/oneroot-bench-tool_1.0_all.deb"
COMMAND = ["apt-get", "install", "-y", "-q", f"/{DEB_IN_IMAGE}"]
MiB = 1 << 20


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=True, text=True, capture_output=True)


def build_deb(where: Path) -> Path:
    """A tiny package: a script and 2 MiB of data, Architecture all, no dependencies."""
    pkg = where / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "usr/bin").mkdir(parents=True)
    (pkg / "usr/share/oneroot-bench-tool").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text(
        "Package: oneroot-bench-tool\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: oneroot <oneroot@example.invalid>\n"
        "Description: a package for oneroot's image-version benchmark\n")
    (pkg / "usr/bin/oneroot-bench-tool").write_text("#!/bin/sh\necho bench tool\n")
    (pkg / "usr/bin/oneroot-bench-tool").chmod(0o755)
    (pkg / "usr/share/oneroot-bench-tool/data").write_bytes(os.urandom(2 * MiB))
    deb = where / "oneroot-bench-tool_1.0_all.deb"
    sh("dpkg-deb", "--root-owner-group", "--build", str(pkg), str(deb))
    return deb


def lab_root() -> Path:
    entries = sorted((default_cache_dir() / "images").glob("*/recipe.json"),
                     key=lambda p: p.stat().st_mtime)
    if not entries:
        sys.exit("error: no cached lab image\nhint: run `oneroot lab up` or the e2e tests once")
    return entries[-1].parent / "root"


@contextlib.contextmanager
def loop_fs(kind: str, image: Path, mountpoint: Path, size_gib: int) -> Iterator[Path]:
    with image.open("wb") as f:
        f.truncate(size_gib << 30)
    sh(f"mkfs.{kind}", *(["-q", "-F"] if kind == "ext4" else ["-q", "-f"]), str(image))
    mountpoint.mkdir(parents=True, exist_ok=True)
    sh("mount", "-o", "loop", str(image), str(mountpoint))
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)
        image.unlink(missing_ok=True)


def used_bytes(fs: Path) -> int:
    sh("sync", "-f", str(fs))
    st = os.statvfs(fs)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def tree_bytes(path: Path) -> int:
    return int(sh("du", "-sxb", "--apparent-size", str(path)).stdout.split()[0])


def filler_dirs(lab: Path, size_mib: int) -> list[Path]:
    """Host directories that bring the lab image to about `size_mib` (sizes read on the
    host, so every filesystem gets the same files)."""
    have = tree_bytes(lab)
    out = []
    for src in sorted(p for p in Path("/usr/lib").iterdir()
                      if p.is_dir() and not p.is_symlink()):
        if have >= size_mib * MiB:
            break
        size = tree_bytes(src)
        if have + size <= size_mib * MiB * 1.1:
            out.append(src)
            have += size
    return out


def make_base(fs: Path, lab: Path, deb: Path, size_mib: int) -> Path:
    base = fs / f"base-{size_mib}"
    sh("cp", "-a", str(lab), str(base))
    filler = base / "opt/filler"
    filler.mkdir(parents=True)
    for src in filler_dirs(lab, size_mib):
        sh("cp", "-a", str(src), str(filler / src.name))
    (base / DEB_IN_IMAGE).parent.mkdir(parents=True)
    shutil.copy2(deb, base / DEB_IN_IMAGE)
    return base


def apt_in(root: Path) -> None:
    with chroot_ready(root):
        done = subprocess.run(["chroot", str(root), *COMMAND], env=CHROOT_ENV,
                              capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"apt-get failed in {root}: {done.stdout}{done.stderr}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    total_s: float
    copy_s: float
    cleanup: Callable[[], None]


Method = Callable[[Path, Path, int], Run]


def copy_then_apt(copy: Callable[[Path, Path], object]) -> Method:
    def run(fs: Path, base: Path, n: int) -> Run:
        new = fs / f"copy-{n}"
        t0 = time.monotonic()
        copy(base, new)
        t1 = time.monotonic()
        apt_in(new)
        t2 = time.monotonic()
        assert (new / "usr/bin/oneroot-bench-tool").is_file()
        return Run(copy_s=t1 - t0, total_s=t2 - t0, cleanup=lambda: shutil.rmtree(new))
    return run


def _cp(*flags: str) -> Callable[[Path, Path], object]:
    return lambda src, dest: sh("cp", *flags, str(src), str(dest))


def _rsync(src: Path, dest: Path) -> None:
    sh("rsync", "-aHAX", f"{src}/", f"{dest}/")


def _bench_store(fs: Path, base: Path) -> tuple[SqlInventory, Paths]:
    paths = Paths(home=fs / f"home-{base.name}")
    if (paths.home / "inventory.db").exists():
        return SqlInventory(paths.home / "inventory.db"), paths
    (paths.home / "images").mkdir(parents=True)
    store = SqlInventory(paths.home / "inventory.db")
    store.apply(plan(Inventory(), make_inventory(
        nodes=0, settings=Settings(boot_dir=PurePosixPath(fs / "boot")),
        image_root=str(fs / "none"),
        images=[Image(name="bench", root=PurePosixPath(base),
                      init_system=InitSystem.SYSTEMD)])))
    return store, paths


def oneroot_version(fs: Path, base: Path, n: int) -> Run:
    store, paths = _bench_store(fs, base)
    t0 = time.monotonic()
    result = exec_new_version(store, paths, "bench", COMMAND, record=False)
    total = time.monotonic() - t0
    assert result.returncode == 0 and result.version is not None
    assert (result.root / "usr/bin/oneroot-bench-tool").is_file()
    version = find_image(store.load(), "bench").get_version(result.version)

    def drop() -> None:  # every run makes its version over the same parent
        shutil.rmtree(result.root)
        abandon_version(store, paths, "bench", version)
        store.close()
    return Run(copy_s=0.0, total_s=total, cleanup=drop)


def overlay_stack(fs: Path, base: Path, n: int) -> Run:
    build = fs / f"stack-{n}"
    t0 = time.monotonic()
    rc = run_in_overlay(base, build, COMMAND)
    total = time.monotonic() - t0
    assert rc == 0
    shutil.rmtree(build / "merged")
    return Run(copy_s=0.0, total_s=total, cleanup=lambda: shutil.rmtree(build))


METHODS: dict[str, tuple[tuple[str, ...], Method]] = {
    "oneroot version (overlay, then hardlink farm)": (("ext4", "btrfs"), oneroot_version),
    "overlay stack (upper kept, no flatten)": (("ext4",), overlay_stack),
    "cp -a": (("ext4",), copy_then_apt(_cp("-a"))),
    "rsync -aHAX": (("ext4",), copy_then_apt(_rsync)),
    "cp -a --reflink=always": (("btrfs",), copy_then_apt(_cp("-a", "--reflink=always"))),
}


def measure(fs: Path, base: Path, run: Method, repeat: int) -> dict[str, float]:
    totals, copies, spaces = [], [], []
    for n in range(repeat):
        before = used_bytes(fs)
        out = run(fs, base, n)
        spaces.append(used_bytes(fs) - before)
        totals.append(out.total_s)
        copies.append(out.copy_s)
        out.cleanup()
    return {"total_s": statistics.median(totals), "copy_s": statistics.median(copies),
            "space_bytes": statistics.median(spaces), "runs": repeat}


def tool_versions() -> dict[str, str]:
    def first(*argv: str) -> str:
        try:
            return sh(*argv).stdout.splitlines()[0]
        except (OSError, subprocess.CalledProcessError):
            return "?"
    commit = first("git", "-C", str(Path(__file__).resolve().parents[2]), "rev-parse",
                   "--short", "HEAD")
    return {"oneroot": commit, "kernel": platform.release(), "cp": first("cp", "--version"),
            "rsync": first("rsync", "--version"), "btrfs": first("btrfs", "--version"),
            "apt": first("apt-get", "--version")}


def machine() -> dict[str, object]:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {"cpu": model, "cores": os.cpu_count(), "memory_kib": int(mem),
            "loadavg": os.getloadavg(), "disk": "a loop-mounted file per filesystem kind, "
            "on the host's ext4 (virtio disk)"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="300,1500", help="image sizes in MiB")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    lab = lab_root()
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="oneroot-bench-image-") as tmp:
        work = Path(tmp)
        deb = build_deb(work)
        for kind in ("ext4", "btrfs"):
            gib = max(8, 4 * max(sizes) // 1024 + 4)
            with loop_fs(kind, work / f"{kind}.img", work / kind, gib) as fs:
                for size in sizes:
                    base = make_base(fs, lab, deb, size)
                    files = int(sh("sh", "-c", f"find {base} -xdev | wc -l").stdout)
                    for name, (kinds, run) in METHODS.items():
                        if kind not in kinds:
                            continue
                        m = measure(fs, base, run, args.repeat)
                        row = {"method": name, "fs": kind, "image_mib": size,
                               "image_bytes": tree_bytes(base), "image_files": files, **m}
                        print(json.dumps(row), flush=True)
                        rows.append(row)
    meta = {"command": " ".join([".venv/bin/python", "bench/image/bench_image.py",
                                 *sys.argv[1:]]),
            "package": "oneroot-bench-tool 1.0 (local .deb, 2 MiB data)",
            "apt_command": " ".join(COMMAND), "versions": tool_versions(),
            "machine": machine(), "loadavg_before": load_before}
    write_results(meta, rows)


def write_results(meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "image.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# image-version benchmark: a new version after `apt-get install` of one package", "",
        f"`{meta['command']}`", "",
        f"Package: {meta['package']}; command in the image: `{meta['apt_command']}`.",
        f"Versions: {json.dumps(meta['versions'])}.",
        f"Machine: {json.dumps(meta['machine'])}.", "",
        "Space: the private filesystem's used bytes after minus before (syncfs), median of "
        "the runs; time: wall clock, median.", "",
        "| image | fs | method | total s | of which copy s | space per version |",
        "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['image_mib']} MiB ({r['image_files']} files) | {r['fs']} | "
                     f"{r['method']} | {float(r['total_s']):.1f} | {float(r['copy_s']):.1f} | "
                     f"{float(r['space_bytes']) / MiB:.1f} MiB |")
    (RESULTS / "image.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
