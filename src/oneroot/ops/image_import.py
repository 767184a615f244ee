"""`oneroot image import NAME SOURCE`: an OCI image (a layout directory, an `oci-archive` or a
`docker-archive` tarball, as `podman save`, `skopeo copy` and `buildah` write them) becomes
image NAME's next version, or a new image.

The parts are maintained tools, not our own tar code:
1. `skopeo copy SOURCE oci:STAGE:import` reads any of the three forms into one OCI layout and
   checks every blob's digest;
2. `umoci raw unpack` applies the layers in order. An OCI whiteout (`.wh.NAME`) removes NAME
   from the layers below it, and an opaque one (`.wh..wh..opq`) empties its directory of
   what the layers below put there: the version is a flat tree, so a whiteout becomes the
   absence of the path, as `image exec` leaves it (nothing of OCI's markers stays behind).
   umoci resolves every path inside the root it unpacks into (no `..` or link escapes);
3. the tree is checked for an init system, the node kernel's modules are added (as
   `image create` adds them), and it is recorded as a complete version (synced, renamed into
   place, then recorded: never exported half made).

The image is hostile input: its own links are followed only inside its tree
(`resolve_inside`), so a `/lib` that points out of the image cannot make us write on the
server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from oneroot.errors import Conflict, ExternalToolError, InvalidValue, UsageError
from oneroot.fsutil.inside import resolve_inside
from oneroot.initramfs.kernel import install_modules
from oneroot.inventory.store import InventoryStore
from oneroot.model.cluster import InitSystem, check_name
from oneroot.model.paths import Paths
from oneroot.ops.image_build import _tree_bytes
from oneroot.ops.image_versions import (
    abandon_version,
    begin_version,
    build_dir,
    finish_version,
    image_lock,
    sync_tree,
)
from oneroot.ops.images import _copy_tree
from oneroot.ops.inventory import detect_init_system, put_image

Progress = Callable[[str], None]
TOOL_TIMEOUT = 1800.0


@dataclass(frozen=True, slots=True)
class ImportResult:
    image: str
    version: int
    root: Path
    source: str
    kind: str  # "oci", "oci-archive" or "docker-archive"
    init_system: InitSystem
    kernel_version: str | None
    size: int
    seconds: float

    def as_json(self) -> dict[str, object]:
        return {"image": self.image, "version": self.version, "ref": f"{self.image}@"
                f"{self.version}", "root": str(self.root), "source": self.source,
                "kind": self.kind, "init_system": self.init_system.value,
                "kernel_modules": self.kernel_version, "size": self.size,
                "seconds": round(self.seconds, 2)}


def source_kind(source: Path) -> str:
    """Which of the three forms `source` is (an error naming what was found otherwise)."""
    if source.is_dir():
        if (source / "oci-layout").is_file() and (source / "index.json").is_file():
            return "oci"
        raise InvalidValue(f"{source} is a directory but not an OCI image layout (no "
                           "oci-layout and index.json)",
                           hint="give an OCI layout directory, or an oci-archive or "
                                "docker-archive tarball (`podman save`, `skopeo copy`)")
    if not source.is_file():
        raise InvalidValue(f"{source} does not exist", hint="give the path of the image")
    try:
        with tarfile.open(source, "r:") as tar:
            names = {PurePosixPath(m.name).as_posix().removeprefix("./")
                     for m in _members(tar, limit=100_000)}
    except (tarfile.TarError, OSError) as exc:
        raise InvalidValue(f"{source} is not an uncompressed tar archive: {exc}",
                           hint="give an oci-archive or docker-archive tarball, not a "
                                "compressed one (gunzip it first)") from None
    if "oci-layout" in names and "index.json" in names:
        return "oci-archive"
    if "manifest.json" in names:
        return "docker-archive"
    raise InvalidValue(f"{source} is a tar archive but neither an oci-archive (no oci-layout) "
                       "nor a docker-archive (no manifest.json)",
                       hint="`skopeo copy` or `podman save` writes either form")


def _members(tar: tarfile.TarFile, *, limit: int) -> list[tarfile.TarInfo]:
    out = []
    for member in tar:
        out.append(member)
        if len(out) > limit:
            raise InvalidValue(f"more than {limit} entries at the top of the archive",
                               hint="an image archive holds a few blobs and an index")
    return out


def _run(argv: Sequence[str], *, what: str, hint: str) -> None:
    if shutil.which(argv[0]) is None:
        raise ExternalToolError(f"{argv[0]} not found", hint=f"apt-get install {argv[0]}")
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True,
                              timeout=TOOL_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ExternalToolError(f"{what} took longer than {TOOL_TIMEOUT:.0f} s",
                                hint=hint) from None
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise ExternalToolError(f"{what} failed: {last[0][:300]}", hint=hint)


def unpack(source: Path, kind: str, ref: str | None, stage: Path, rootfs: Path) -> None:
    """SOURCE → one OCI layout at `stage` (skopeo, digests checked) → a flat tree at `rootfs`
    (umoci: layers in order, whiteouts applied)."""
    transport = {"oci": "oci", "oci-archive": "oci-archive",
                 "docker-archive": "docker-archive"}[kind]
    src = f"{transport}:{source}" + (f":{ref}" if ref else "")
    _run(["skopeo", "copy", "--quiet", src, f"oci:{stage}:import"],
         what=f"reading {kind} {source}",
         hint="check the archive with `skopeo inspect " + src + "`; with more than one image "
              "in it, choose one with --ref")
    _run(["umoci", "raw", "unpack", "--image", f"{stage}:import", str(rootfs)],
         what="unpacking the image's layers", hint="see `umoci stat --image "
         f"{stage}:import`; the layers may be corrupt")


def add_kernel_modules(tree: Path, kernel_modules_dir: Path,
                       modules: Sequence[str] | None) -> None:
    """The node kernel's modules into the image's `/lib/modules/VERSION`, through the
    image's own links resolved inside it (never out of it)."""
    version = kernel_modules_dir.name
    dest_parent = resolve_inside(tree, "lib/modules")
    if not dest_parent.resolve().is_relative_to(tree.resolve()):  # resolve_inside's promise
        raise Conflict(f"/lib/modules of the image leads out of it ({dest_parent})",
                       hint="the image is malformed; fix its /lib link")
    dest_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tree.parent, prefix=".modules-") as tmp:
        staged = Path(tmp)
        if modules is None:
            (staged / "lib" / "modules").mkdir(parents=True)
            _copy_tree(kernel_modules_dir, staged / "lib" / "modules" / version)
        else:
            install_modules(kernel_modules_dir, modules, dest_root=staged)
        dest = dest_parent / version
        if os.path.lexists(dest):
            shutil.rmtree(dest) if dest.is_dir() and not dest.is_symlink() else dest.unlink()
        os.rename(staged / "lib" / "modules" / version, dest)


def _prepare(tree: Path, kernel_modules_dir: Path | None, modules: Sequence[str] | None,
             say: Progress) -> InitSystem:
    init = detect_init_system(tree)
    if init is InitSystem.UNKNOWN:
        raise InvalidValue("the image has no init system oneroot can boot (no systemd, no "
                           "OpenRC at /sbin/init)",
                           hint="build it with systemd-sysv (or openrc) installed, e.g. "
                                "`RUN apt-get install -y systemd-sysv`")
    if kernel_modules_dir is not None:
        say(f"adding kernel modules {kernel_modules_dir.name}")
        add_kernel_modules(tree, kernel_modules_dir, modules)
    return init


def import_image(store: InventoryStore, paths: Paths, name: str, source: Path, *,
                 ref: str | None = None, kernel_modules_dir: Path | None = None,
                 modules: Sequence[str] | None = None,
                 progress: Progress | None = None) -> ImportResult:
    """Import SOURCE as image `name`'s next version (`name@N`), or as a new image (`@1`)."""
    check_name("image", name)
    say = progress or (lambda _msg: None)
    started = time.monotonic()
    kind = source_kind(source)
    exists = name in store.load().images
    command = f"image import {source}" + (f" --ref {ref}" if ref else "")
    images_dir = paths.home / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    with image_lock(paths, name):
        if not exists:
            dest = images_dir / name
            if dest.exists():
                raise Conflict(f"{dest} already exists",
                               hint="pick another name, or remove the directory")
            with tempfile.TemporaryDirectory(dir=images_dir, prefix=f".{name}.import-") as tmp:
                tree = _unpack_and_prepare(source, kind, ref, Path(tmp), kernel_modules_dir,
                                           modules, say)
                sync_tree(tree)
                os.rename(tree, dest)
            put_image(store, name, dest, description=f"OCI import of {source}")
            return ImportResult(image=name, version=1, root=dest, source=str(source),
                                kind=kind, init_system=detect_init_system(dest),
                                kernel_version=_kv(kernel_modules_dir), size=_tree_bytes(dest),
                                seconds=time.monotonic() - started)
        version = begin_version(store, paths, name, command=command)
        build = build_dir(paths, name, version.number)
        try:
            build.mkdir(parents=True)
            tree = _unpack_and_prepare(source, kind, ref, build, kernel_modules_dir, modules,
                                       say)
            size = _tree_bytes(tree)
            done = finish_version(store, paths, name, version, tree, size=size, added=size)
        except BaseException:
            abandon_version(store, paths, name, version)
            raise
        shutil.rmtree(build, ignore_errors=True)
    return ImportResult(image=name, version=done.number, root=Path(done.root),
                        source=str(source), kind=kind, init_system=InitSystem(done.init_system),
                        kernel_version=_kv(kernel_modules_dir), size=size,
                        seconds=time.monotonic() - started)


def _kv(kernel_modules_dir: Path | None) -> str | None:
    return kernel_modules_dir.name if kernel_modules_dir is not None else None


def _unpack_and_prepare(source: Path, kind: str, ref: str | None, work: Path,
                        kernel_modules_dir: Path | None, modules: Sequence[str] | None,
                        say: Progress) -> Path:
    """Unpack into `work/root` (staging layout in `work/oci`, removed after); check and add
    modules. Returns the tree."""
    tree = work / "root"
    stage = work / "oci"
    say(f"reading {kind} {source}")
    try:
        unpack(source, kind, ref, stage, tree)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if not tree.is_dir():
        raise UsageError("umoci left no root tree", hint="see `umoci raw unpack --help`")
    say("checking the image")
    _prepare(tree, kernel_modules_dir, modules, say)
    return tree
