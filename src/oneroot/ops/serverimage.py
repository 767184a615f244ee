"""The lab's server disk image: Debian 12 with Debian's kernel (so `nfsd.ko`), nfs-kernel-server,
python3 and oneroot installed from a wheel of this tree into a venv, as an ext4 disk for QEMU.

Two cache stages under `<cache>/server-images/`:
- `base-<key>/root`: mmdebstrap of the package list (minutes, once per package list);
- `disk-<key>/`: the base plus the venv (wheels built on the host from the tree, its PyPI
  dependencies fetched then, never at test time), the lab's network and SSH key, the node
  kernel and initramfs, made into `disk.img` with `mkfs.ext4 -d` (seconds; once per tree).
The disk key hashes the base key and every file the wheel is built from, so a code change gives
a new disk and an unchanged tree reuses the old one. QEMU opens the disk with `snapshot=on`: a
cached disk is never written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from oneroot.errors import ExternalToolError
from oneroot.initramfs.builder import build_initramfs
from oneroot.initramfs.busybox import fetch_busybox
from oneroot.initramfs.cpio import Compression
from oneroot.initramfs.kernel import Kernel, file_lock
from oneroot.net import MacAddress
from oneroot.ops.images import _copy_tree, _run_logged, host_debian_mirror

log = logging.getLogger(__name__)

SERVER_RECIPE_VERSION = 1
SERVER_PACKAGES = ("systemd-sysv", "udev", "kmod", "iproute2", "procps", "linux-image-amd64",
                   "nfs-kernel-server", "python3", "python3-venv", "openssh-server", "nftables")
SERVER_MAC = MacAddress(bytes([0x52, 0x54, 0x00, 0x0E, 0x00, 0xFE]))
VENV = "/opt/oneroot"
SERVER_ROOT_ARG = "root=/dev/vda"  # on the server VM's kernel command line (ops.labserver)
# Where the image keeps the node kernel + initramfs made from its own kernel at build time.
NODE_BOOT_DIR = "/opt/oneroot-lab/boot"
DISK_SIZE = "3G"
KEEP_DISKS = 3
_COMPLETE = "done.json"

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerDisk:
    """A built server disk: boot it with `kernel` + `initrd`, root=/dev/vda."""

    disk: Path
    kernel: Path
    initrd: Path
    ssh_key: Path  # private key whose public half is root's authorized key in the image
    key: str


def _hash(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def tree_digest(source: Path) -> str:
    """A digest of everything a wheel of `source` is built from (pyproject + src/)."""
    digest = hashlib.sha256()
    files = [source / "pyproject.toml", *sorted((source / "src").rglob("*"))]
    for path in files:
        generated = any(p == "__pycache__" or p.endswith(".egg-info") for p in path.parts)
        if path.is_file() and not generated:  # `pip wheel` rewrites the egg-info
            digest.update(str(path.relative_to(source)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def source_tree() -> Path:
    """The checkout oneroot runs from (has pyproject.toml two levels above the package)."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "pyproject.toml").is_file():
        raise ExternalToolError(f"no pyproject.toml at {root}: oneroot is not run from a "
                                "checkout", hint="the server VM image is built from a checkout")
    return root


def _chroot(root: Path, *argv: str, log_path: Path) -> None:
    _run_logged(["chroot", str(root), *argv], log_path, hint=f"see {log_path}", timeout=900)


def build_base(cache_dir: Path, *, mirror: str | None = None, progress: Progress) -> Path:
    """mmdebstrap the server's packages into `<cache>/server-images/base-<key>/root` (once)."""
    mirror = mirror or host_debian_mirror("bookworm")
    key = _hash({"v": SERVER_RECIPE_VERSION, "packages": SERVER_PACKAGES, "mirror": mirror})
    entry = cache_dir / "server-images" / f"base-{key}"
    if (entry / _COMPLETE).is_file():
        return entry / "root"
    entry.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(entry.parent / ".lock-base"):
        if (entry / _COMPLETE).is_file():
            return entry / "root"
        if entry.exists():
            shutil.rmtree(entry)
        entry.mkdir()
        progress(f"mmdebstrap bookworm server root from {mirror} (cached after)")
        _run_logged(
            ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory",
             f"--include={','.join(SERVER_PACKAGES)}", "bookworm", str(entry / "root"),
             f"deb {mirror} bookworm main"],
            entry / "mmdebstrap.log", hint="check that the mirror is reachable", timeout=1800)
        (entry / _COMPLETE).write_text(json.dumps({"key": key, "mirror": mirror}) + "\n")
    return entry / "root"


def build_wheels(source: Path, dest: Path, *, progress: Progress) -> None:
    """The oneroot wheel of `source` and wheels of its dependencies (PyPI, now: image time)."""
    progress("building the oneroot wheel and fetching its dependencies")
    _run_logged([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                 "--wheel-dir", str(dest), str(source)],
                dest.parent / "pip-wheel.log", hint="PyPI must be reachable at image build",
                timeout=900)


def _configure(root: Path, public_key: str) -> None:
    """Lab specifics: the server's address by MAC, root's SSH key, no nfsd at boot."""
    net = root / "etc/systemd/network/10-oneroot-lab-server.network"
    net.parent.mkdir(parents=True, exist_ok=True)
    net.write_text(f"[Match]\nMACAddress={SERVER_MAC}\n\n[Network]\nAddress=10.0.0.1/24\n"
                   "LinkLocalAddressing=no\nIPv6AcceptRA=no\n")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in ("systemd-networkd.service",):
        link = wants / unit
        if not link.exists():
            link.symlink_to(f"/lib/systemd/system/{unit}")
    # Started over SSH by the lab (after `oneroot init`), not at boot: nodes boot this root too.
    (wants / "nfs-server.service").unlink(missing_ok=True)
    # The nodes' network is up from their initramfs (their root is on it). systemd-networkd
    # failed on them and was restarted five times, each boot ~15 s later to network-online.
    dropin = root / "etc/systemd/system/systemd-networkd.service.d/oneroot-lab.conf"
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text("# the lab server only: nodes booting this root skip it\n"
                      f"[Unit]\nConditionKernelCommandLine={SERVER_ROOT_ARG}\n")
    ssh = root / "root/.ssh"
    ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh / "authorized_keys").write_text(public_key)
    (root / "etc/hostname").write_text("server\n")
    (root / "etc/fstab").write_text("/dev/vda / ext4 rw,errors=remount-ro 0 1\n")
    (root / "etc/machine-id").write_text(hashlib.md5(b"oneroot-lab-server").hexdigest() + "\n")
    (root / "usr/local/bin").mkdir(parents=True, exist_ok=True)
    oneroot = root / "usr/local/bin/oneroot"
    oneroot.unlink(missing_ok=True)
    oneroot.symlink_to(f"{VENV}/bin/oneroot")


def _node_boot(root: Path, cache_dir: Path, progress: Progress) -> None:
    """The node kernel (the image's own) and oneroot's initramfs for it, in the image."""
    kernel = Kernel.from_tree(root)
    dest = root / NODE_BOOT_DIR.lstrip("/")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(kernel.vmlinuz, dest / "vmlinuz")
    progress(f"building the node initramfs for kernel {kernel.version}")
    build_initramfs(kernel=kernel, busybox=fetch_busybox(cache_dir=cache_dir),
                    out=dest / "initramfs.img", compression=Compression.GZIP, level=6)


def _boot_files(root: Path) -> tuple[Path, Path]:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if len(kernels) != 1 or len(initrds) != 1:
        raise ExternalToolError(f"{root}/boot: expected one kernel and one initrd, found "
                                f"{[p.name for p in (*kernels, *initrds)]}")
    return kernels[0], initrds[0]


def build_server_disk(cache_dir: Path, *, source: Path | None = None, mirror: str | None = None,
                      progress: Progress | None = None) -> ServerDisk:
    """The cached server disk for this tree, built if missing (see the module docstring)."""
    say = progress or (lambda _msg: None)
    source = source or source_tree()
    base = build_base(cache_dir, mirror=mirror, progress=say)
    key = _hash({"base": base.parent.name, "tree": tree_digest(source), "size": DISK_SIZE,
                 "v": SERVER_RECIPE_VERSION})
    entry = cache_dir / "server-images" / f"disk-{key}"
    if not (entry / _COMPLETE).is_file():
        with file_lock(entry.parent / ".lock-disk"):
            if not (entry / _COMPLETE).is_file():
                _build_disk(entry, base, source, cache_dir, say)
                _prune_disks(entry.parent, keep=entry)
    return ServerDisk(disk=entry / "disk.img", kernel=entry / "vmlinuz",
                      initrd=entry / "initrd.img", ssh_key=entry / "id_ed25519", key=key)


def any_server_disk(cache_dir: Path, *, progress: Progress | None = None) -> ServerDisk:
    """The newest complete cached server disk, whatever tree it was built from (for VMs that
    need Debian's kernel and tools, not this tree's oneroot); built for this tree if none."""
    done = sorted((d for d in (cache_dir / "server-images").glob("disk-*")
                   if (d / _COMPLETE).is_file()), key=lambda d: d.stat().st_mtime)
    if not done:
        return build_server_disk(cache_dir, progress=progress)
    entry = done[-1]
    return ServerDisk(disk=entry / "disk.img", kernel=entry / "vmlinuz",
                      initrd=entry / "initrd.img", ssh_key=entry / "id_ed25519",
                      key=entry.name.removeprefix("disk-"))


def _prune_disks(directory: Path, *, keep: Path, count: int = KEEP_DISKS) -> None:
    """Each tree change makes a ~1 GiB disk: keep the newest `count` (a VM still running
    from a removed one keeps its open file)."""
    disks = sorted((d for d in directory.glob("disk-*") if d != keep and d.is_dir()),
                   key=lambda d: d.stat().st_mtime, reverse=True)
    for old in disks[count - 1:]:
        shutil.rmtree(old, ignore_errors=True)
        log.info("lab.server_disk.pruned entry=%s", old)


def _build_disk(entry: Path, base: Path, source: Path, cache_dir: Path,
                say: Progress) -> None:
    if entry.exists():
        shutil.rmtree(entry)
    work = Path(tempfile.mkdtemp(dir=entry.parent, prefix=".disk-"))
    try:
        root = work / "root"
        say("copying the server base root")
        _copy_tree(base, root)
        build_wheels(source, work / "wheels", progress=say)
        shutil.copytree(work / "wheels", root / "tmp/wheels")
        say(f"installing oneroot into {VENV} in the image")
        _chroot(root, "python3", "-m", "venv", VENV, log_path=work / "venv.log")
        _chroot(root, f"{VENV}/bin/pip", "install", "--quiet", "--no-index",
                "--disable-pip-version-check", "--find-links", "/tmp/wheels", "oneroot",
                log_path=work / "pip-install.log")
        shutil.rmtree(root / "tmp/wheels")
        _run_logged(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "oneroot-lab",
                     "-f", str(work / "id_ed25519")], work / "ssh-keygen.log",
                    hint="install openssh-client", timeout=60)
        _configure(root, (work / "id_ed25519.pub").read_text())
        _node_boot(root, cache_dir, say)
        vmlinuz, initrd = _boot_files(root)
        shutil.copyfile(vmlinuz, work / "vmlinuz")
        shutil.copyfile(initrd, work / "initrd.img")
        say(f"mkfs.ext4 -d ({DISK_SIZE})")
        _run_logged(["mkfs.ext4", "-q", "-F", "-L", "oneroot-server", "-d", str(root),
                     str(work / "disk.img"), DISK_SIZE], work / "mkfs.log",
                    hint="e2fsprogs >= 1.43 has mkfs.ext4 -d", timeout=900)
        shutil.rmtree(root)
        (work / _COMPLETE).write_text(json.dumps({"base": base.parent.name}) + "\n")
        work.rename(entry)
    finally:
        if work.exists():
            shutil.rmtree(work)
    log.info("lab.server_disk.built entry=%s", entry)


def image_disk(tree: Path, out: Path, *, size: str = "1G") -> Path:
    """An ext4 disk holding `tree` at its root (an image oneroot made on this host, carried
    into the server VM as a second disk: the VM has no route to a Debian mirror)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    _run_logged(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(out), size],
                out.with_suffix(".log"), hint="e2fsprogs >= 1.43 has mkfs.ext4 -d", timeout=900)
    return out
