"""`oneroot image exec IMAGE -- COMMAND…`: run a command inside an image, e.g.
`apt-get install -y htop`, and record what it changed ("install once, every node has it").

For an image directory: chroot into it with /proc, /sys and /dev mounted (unmounted after, even
when the command fails), a `usr/sbin/policy-rc.d` that refuses every service start (Debian's
maintainer scripts ask it before starting a daemon) and the host's resolv.conf for apt; each is
put back as it was. What changed is found by comparing a manifest of the tree (type, mode,
owner, size, mtime, link target) taken before and after, plus the dpkg package list; the list is
written to `HOME/images/<name>.changes/<UTC stamp>.txt`.

For an image that is the server's live `/` (the seed's way) the command runs as is, without a
chroot and without blocking services: installing a package on the server is what the seed
does. Only the dpkg package list is compared there (walking all of `/` is slow and noisy).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from oneroot.errors import ConfigError, ExternalToolError, NotFound, UsageError
from oneroot.model.cluster import Image
from oneroot.model.inventory import Inventory
from oneroot.model.paths import Paths
from oneroot.ops.imagefs import mount_images_fs_if_made

log = logging.getLogger(__name__)

POLICY_RC_D = PurePosixPath("usr/sbin/policy-rc.d")
POLICY_SCRIPT = b"#!/bin/sh\n# oneroot image exec: no service starts inside the image\nexit 101\n"
RESOLV_CONF = PurePosixPath("etc/resolv.conf")
# Mounted by us (or kernel filesystems): not part of the image's content.
SKIP_TOP = frozenset({"proc", "sys", "dev", "run", "tmp"})
# Churn that every apt run makes and no node cares about.
SKIP_PREFIXES = ("var/cache/apt/", "var/lib/apt/lists/", "var/log/", "var/cache/debconf/",
                 "var/cache/ldconfig/")
CHROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
              "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
              "TERM": "dumb"}

Entry = tuple[int, int, int, int, int, str]  # mode, uid, gid, size, mtime_ns, link target
Manifest = dict[str, Entry]


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeChanges:
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.added) + len(self.changed) + len(self.removed)


@dataclass(frozen=True, slots=True, kw_only=True)
class PackageChanges:
    installed: tuple[str, ...] = ()  # "name version"
    upgraded: tuple[str, ...] = ()  # "name old -> new"
    removed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecResult:
    image: str
    root: Path
    command: tuple[str, ...]
    returncode: int
    chroot: bool
    files: TreeChanges | None
    packages: PackageChanges
    log_path: Path | None
    started: datetime.datetime
    seconds: float
    version: int | None = None  # the version the command made (None: none, or live `/`)
    parent: int | None = None  # the version it ran over

    def summary(self) -> str:
        parts = [f"image {self.image}: `{' '.join(self.command)}` exited {self.returncode} "
                 f"in {self.seconds:.1f} s ({'chroot' if self.chroot else 'no chroot: live /'})"]
        if self.version is not None:
            parts.append(f"new version {self.image}@{self.version} (from "
                         f"{self.image}@{self.parent}): {self.root}")
        elif self.parent is not None:
            parts.append(f"no new version: {self.image}@{self.parent} stays the latest")
        p = self.packages
        if p.installed or p.upgraded or p.removed:
            parts.append(f"packages: {len(p.installed)} installed, {len(p.upgraded)} upgraded, "
                         f"{len(p.removed)} removed")
        if self.files is not None:
            f = self.files
            parts.append(f"files: {len(f.added)} added, {len(f.changed)} changed, "
                         f"{len(f.removed)} removed")
        if self.log_path is not None:
            parts.append(f"changes recorded in {self.log_path}")
        return "\n".join(parts)


# -- manifests (pure once walked) -------------------------------------------------------------

def _skipped(rel: str) -> bool:
    return rel.startswith(SKIP_PREFIXES)


def tree_manifest(root: Path) -> Manifest:
    """Every path under `root` (not following links, not crossing into other filesystems)."""
    out: Manifest = {}
    root_dev = os.lstat(root).st_dev
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = list(os.scandir(root / rel_dir if rel_dir else root))
        except (PermissionError, FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if (not rel_dir and entry.name in SKIP_TOP) or _skipped(rel + "/"):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            link = os.readlink(entry.path) if stat.S_ISLNK(st.st_mode) else ""
            size = st.st_size if stat.S_ISREG(st.st_mode) else 0
            mtime = 0 if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, size, mtime, link)
            if stat.S_ISDIR(st.st_mode) and st.st_dev == root_dev:
                stack.append(rel)
    return out


def compare_manifests(before: Manifest, after: Manifest) -> TreeChanges:
    return TreeChanges(
        added=tuple(sorted(after.keys() - before.keys())),
        removed=tuple(sorted(before.keys() - after.keys())),
        changed=tuple(sorted(k for k in before.keys() & after.keys() if before[k] != after[k])))


def parse_dpkg_status(text: str) -> dict[str, str]:
    """Installed packages of a dpkg status file: {name[:arch]: version}."""
    out: dict[str, str] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1].isspace() or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        if "Package" in fields and fields.get("Status", "").endswith(" installed"):
            arch = fields.get("Architecture", "")
            name = fields["Package"] + (f":{arch}" if arch not in ("", "all", "amd64") else "")
            out[name] = fields.get("Version", "")
    return out


def compare_packages(before: Mapping[str, str], after: Mapping[str, str]) -> PackageChanges:
    return PackageChanges(
        installed=tuple(f"{n} {after[n]}" for n in sorted(after.keys() - before.keys())),
        removed=tuple(f"{n} {before[n]}" for n in sorted(before.keys() - after.keys())),
        upgraded=tuple(f"{n} {before[n]} -> {after[n]}"
                       for n in sorted(before.keys() & after.keys()) if before[n] != after[n]))


def _dpkg_packages(root: Path) -> dict[str, str]:
    try:
        return parse_dpkg_status((root / "var/lib/dpkg/status").read_text(errors="replace"))
    except FileNotFoundError:
        return {}


def render_changes(result: ExecResult) -> str:
    lines = [f"# oneroot image exec: image {result.image} ({result.root})",
             f"# started {result.started.isoformat()}, {result.seconds:.1f} s, "
             f"exit {result.returncode}, {'chroot' if result.chroot else 'live /, no chroot'}",
             f"# command: {' '.join(result.command)}"]
    if result.version is not None:
        lines.append(f"# version: {result.image}@{result.version} from "
                     f"{result.image}@{result.parent}")
    lines.append("")
    p = result.packages
    lines += [f"installed {x}" for x in p.installed]
    lines += [f"upgraded {x}" for x in p.upgraded]
    lines += [f"removed-package {x}" for x in p.removed]
    if result.files is not None:
        f = result.files
        lines += [f"A /{x}" for x in f.added]
        lines += [f"M /{x}" for x in f.changed]
        lines += [f"D /{x}" for x in f.removed]
    return "\n".join(lines) + "\n"


# -- the chroot --------------------------------------------------------------------------------

def _mount(*argv: str) -> None:
    done = subprocess.run(["mount", *argv], capture_output=True, text=True)
    if done.returncode != 0:
        raise ExternalToolError(f"mount {' '.join(argv)} failed: {done.stderr.strip()}",
                                hint="image exec needs root (mount, chroot)")


def _umount(target: Path) -> None:
    done = subprocess.run(["umount", str(target)], capture_output=True, text=True)
    if done.returncode != 0:  # something the command left running holds it: detach
        log.warning("image_exec.umount_lazy target=%s reason=%s", target, done.stderr.strip())
        subprocess.run(["umount", "-l", str(target)], capture_output=True, text=True)


def _inside(root: Path, rel: PurePosixPath) -> Path:
    """`root/rel` with no symlink in between (a link in an image must not point us at the
    host's own /proc or /etc)."""
    path = root
    for part in rel.parts:
        path = path / part
        if path.is_symlink():
            raise ConfigError(f"{path} is a symlink: refusing to mount or write through it",
                              hint="the image's top-level dirs must be real directories")
    return path


@contextlib.contextmanager
def _swapped_file(path: Path, data: bytes | None, mode: int) -> Iterator[None]:
    """`path` holds `data` (or the host file it is a copy of) for the duration; then the
    original (file, link, or nothing) is back."""
    saved = path.with_name(f".{path.name}.oneroot-saved")
    had = path.exists() or path.is_symlink()
    if saved.exists() or saved.is_symlink():
        raise ConfigError(f"{saved} exists: an earlier image exec did not finish",
                          hint=f"restore it: mv {saved} {path}")
    if data is None:
        yield
        return
    if had:
        os.rename(path, saved)
    try:
        path.write_bytes(data)
        os.chmod(path, mode)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if had:
            os.rename(saved, path)


def _umount_all(mounted: list[Path]) -> None:
    for target in reversed(mounted):
        _umount(target)


@contextlib.contextmanager
def chroot_ready(root: Path, *, resolv_conf: Path = Path("/etc/resolv.conf")) -> Iterator[None]:
    """proc, sys, dev mounted; services blocked; the host's DNS. All undone on the way out."""
    targets = [(_inside(root, PurePosixPath(d)), d) for d in ("proc", "sys", "dev")]
    for target, _ in targets:
        if not target.is_dir():
            raise ConfigError(f"{target} is not a directory", hint="is this an image root?")
    resolv = resolv_conf.read_bytes() if resolv_conf.exists() else None
    _inside(root, POLICY_RC_D.parent)
    _inside(root, RESOLV_CONF.parent)
    mounted: list[Path] = []
    with contextlib.ExitStack() as stack:
        stack.callback(_umount_all, mounted)
        for target, kind in targets:
            if kind == "proc":
                _mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", str(target))
            elif kind == "sys":
                _mount("-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", str(target))
            else:
                _mount("--bind", "/dev", str(target))
            mounted.append(target)
        stack.enter_context(_swapped_file(root / POLICY_RC_D, POLICY_SCRIPT, 0o755))
        stack.enter_context(_swapped_file(root / RESOLV_CONF, resolv, 0o644))
        yield


# -- the use-case ------------------------------------------------------------------------------

def find_image(inv: Inventory, name: str) -> Image:
    image = inv.images.get(name)
    if image is None:
        raise NotFound(f"no image named {name!r}", hint="see `oneroot image list`")
    return image


def changes_dir(home: Path, image: str) -> Path:
    return home / "images" / f"{image}.changes"


def forget_negative_dentries(drop_caches: Path = Path("/proc/sys/vm/drop_caches")) -> None:
    """Drop the kernel's unused dentries after a change to the live `/`.

    The masked view of `/` is an overlayfs over the live root, and overlayfs keeps the
    negative dentries of names looked up before they existed: after round 1 of
    tests/e2e/test_knfsd.py ran `tree` (a PATH search), a `tree` installed on the server
    stayed invisible through the view and so to every node (measured in the knfsd server VM).
    Dropping unused dentries makes the next lookup go to the real root again.
    """
    try:
        drop_caches.write_text("2\n")
    except OSError as exc:
        log.warning("image_exec.drop_caches_failed error=%s: nodes may not see new files "
                    "until the view is remounted", exc)


def exec_in_image(inv: Inventory, home: Path, name: str, command: Sequence[str], *,
                  record: bool = True, chroot: str = "chroot",
                  now: datetime.datetime | None = None) -> ExecResult:
    """Run `command` in image `name` (chroot; for the live `/`, directly) and record changes."""
    if not command:
        raise UsageError("no command given", hint="e.g. oneroot image exec lab -- apt-get "
                                                  "install -y htop")
    image = find_image(inv, name)
    root = Path(image.root).resolve()
    live = root == Path("/")
    if not live and shutil.which(chroot) is None:
        raise ExternalToolError(f"{chroot} not found", hint="install coreutils")
    t0 = datetime.datetime.now(datetime.UTC)
    started = (now or t0).replace(microsecond=0)
    packages_before = _dpkg_packages(root)
    files_before = None if live or not record else tree_manifest(root)
    if live:
        log.info("image_exec.live image=%s command=%s", name, command)
        rc = subprocess.run(list(command)).returncode
        forget_negative_dentries()
    else:
        with chroot_ready(root):
            rc = subprocess.run([chroot, str(root), *command], env=CHROOT_ENV).returncode
    files = None if files_before is None else compare_manifests(files_before,
                                                                tree_manifest(root))
    packages = compare_packages(packages_before, _dpkg_packages(root))
    seconds = (datetime.datetime.now(datetime.UTC) - t0).total_seconds()
    result = ExecResult(image=name, root=root, command=tuple(command), returncode=rc,
                        chroot=not live, files=files, packages=packages, log_path=None,
                        started=started, seconds=seconds)
    if record:
        result = record_changes(home, result)
    log.info("image_exec.done image=%s rc=%d seconds=%.1f", name, rc, seconds)
    return result


def record_changes(home: Path, result: ExecResult) -> ExecResult:
    """Write `result`'s change list to `HOME/images/NAME.changes/<UTC stamp>.txt`."""
    mount_images_fs_if_made(Paths(home=home))  # never on the bare mount point of HOME/images
    directory = changes_dir(home, result.image)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = result.started.strftime('%Y%m%dT%H%M%SZ')
    path = directory / f"{stamp}.txt"
    n = 1
    while path.exists():
        n += 1
        path = directory / f"{stamp}-{n}.txt"
    result = dataclasses.replace(result, log_path=path)
    path.write_text(render_changes(result))
    return result
