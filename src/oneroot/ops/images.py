"""Images: a Debian root made with mmdebstrap (`oneroot image create`), or the server's own
`/` (`oneroot image use /`, the seed's way).

A built image is kept in the cache keyed by everything that went into it (suite, init, mirror,
packages, kernel version, module selection), so a second `create` of the same recipe is a
copy (`cp -a --reflink=auto`: seconds, or instant on a reflink filesystem). DESIGN §8: a
package cache saves nothing; keeping the finished root is what pays.

Facts behind the recipe (DESIGN §8): `--variant=minbase` lacks kmod (added); mmdebstrap reads
sources from stdin when it is not a terminal (the mirror is passed explicitly and stdin is
/dev/null); the kernel's full module tree is ~400 MiB — right for a real image, too much for a
test image, so `modules=` selects a closure instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from oneroot.errors import BuildError, Conflict, ExternalToolError, InvalidValue
from oneroot.initramfs.kernel import file_lock, install_modules
from oneroot.inventory.store import InventoryStore
from oneroot.model.cluster import InitSystem, check_name
from oneroot.ops.imagefs import mount_if_images_dir
from oneroot.ops.inventory import detect_init_system, put_image

log = logging.getLogger(__name__)

RECIPE_VERSION = 1
DEFAULT_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("udev", "kmod", "iproute2")
INIT_PACKAGES = {
    InitSystem.SYSTEMD: ("systemd-sysv",),
    InitSystem.OPENRC: ("sysvinit-core", "openrc"),
}
# What a lab node needs from its kernel (DESIGN §7), closure added from modules.dep.
LAB_MODULES = ("virtio_net", "virtio_pci", "e1000", "nfs", "nfsv3", "nfsv4", "overlay", "fuse",
               "loop", "ext4")
_COMPLETE = "recipe.json"  # written last: its presence means the cached root is whole

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageRecipe:
    """Everything a built image depends on; its hash names the cache entry."""

    suite: str = "bookworm"
    init: InitSystem = InitSystem.SYSTEMD
    mirror: str = DEFAULT_MIRROR
    packages: tuple[str, ...] = ()
    kernel_version: str | None = None
    modules: tuple[str, ...] | None = None  # None: the kernel's whole module tree

    def all_packages(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*INIT_PACKAGES[self.init], *BASE_PACKAGES,
                                    *self.packages)))

    def key(self) -> str:
        data = {**asdict(self), "init": self.init.value, "version": RECIPE_VERSION,
                "packages": list(self.all_packages()),
                "modules": None if self.modules is None else sorted(self.modules)}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageResult:
    name: str
    root: Path
    init_system: InitSystem
    cached: bool
    seconds: float
    cache_entry: Path | None = None


def host_debian_mirror(suite: str = "bookworm", apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror the host's apt uses for `suite` (one-line or deb822 sources)."""
    candidates: list[tuple[str, list[str]]] = []
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in files:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split("#", 1)[0].split()
            if len(words) >= 3 and words[0] == "deb":
                rest = [w for w in words[1:] if not w.startswith("[")]
                if len(rest) >= 2:
                    candidates.append((rest[0], [rest[1]]))
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        try:
            text = path.read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and "uris" in fields:
                candidates.append((fields["uris"].split()[0], fields.get("suites", "").split()))
    for uri, suites in candidates:
        if suite in suites and "security" not in uri:
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def _run_logged(argv: Sequence[str], log_path: Path, *, hint: str, timeout: float) -> None:
    with log_path.open("wb") as out:
        proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-8:]
        raise ExternalToolError(f"{argv[0]} failed ({proc.returncode}): " + " | ".join(tail),
                                hint=hint)


def _copy_tree(src: Path, dest: Path) -> None:
    proc = subprocess.run(["cp", "-a", "--reflink=auto", str(src), str(dest)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ExternalToolError(f"cp -a {src} {dest} failed: {proc.stderr.strip()}")


def build_root(recipe: ImageRecipe, target: Path, *, kernel_modules_dir: Path | None,
               mmdebstrap: str = "mmdebstrap", progress: Progress | None = None,
               timeout: float = 1800) -> None:
    """mmdebstrap `recipe` into `target` (must not exist), then the node kernel's modules."""
    say = progress or (lambda _msg: None)
    if shutil.which(mmdebstrap) is None:
        raise ExternalToolError(f"{mmdebstrap} not found", hint="apt-get install mmdebstrap")
    say(f"mmdebstrap {recipe.suite} ({recipe.init.value}) from {recipe.mirror}")
    _run_logged(
        [mmdebstrap, "--variant=minbase", "--mode=root", "--format=directory",
         f"--include={','.join(recipe.all_packages())}", recipe.suite, str(target),
         f"deb {recipe.mirror} {recipe.suite} main"],
        target.parent / "mmdebstrap.log",
        hint="check that the mirror is reachable (`apt-get update` on the host)", timeout=timeout)
    if kernel_modules_dir is not None:
        version = kernel_modules_dir.name
        if recipe.modules is None:
            say(f"kernel modules {version} (whole tree)")
            dest = target / "lib" / "modules" / version
            dest.parent.mkdir(parents=True, exist_ok=True)
            _copy_tree(kernel_modules_dir, dest)
        else:
            say(f"kernel modules {version} ({len(recipe.modules)} + dependencies)")
            install_modules(kernel_modules_dir, recipe.modules, dest_root=target)


def create_image(store: InventoryStore | None, name: str, *, dest_dir: Path, cache_dir: Path,
                 suite: str = "bookworm", init: InitSystem | str = InitSystem.SYSTEMD,
                 kernel_modules_dir: Path | None = None, modules: Sequence[str] | None = None,
                 packages: Sequence[str] = (), mirror: str | None = None,
                 mmdebstrap: str = "mmdebstrap", progress: Progress | None = None
                 ) -> ImageResult:
    """Build (or take from the cache) a Debian image and put it at `dest_dir/name`.

    `kernel_modules_dir` is the node kernel's `lib/modules/<version>` (e.g. `fetch_kernel(...)
    .modules_dir`); `modules` None copies the whole tree (real use), a list copies their
    closure (tests, the lab). With a `store`, the image is registered with its init system.
    The destination must not exist: rebuilding under a running export gives stale handles.
    """
    check_name("image", name)
    init = InitSystem(init)
    if init not in INIT_PACKAGES:
        raise InvalidValue(f"init must be systemd or openrc, not {init.value!r}")
    say = progress or (lambda _msg: None)
    started = time.monotonic()
    recipe = ImageRecipe(
        suite=suite, init=init, mirror=mirror or host_debian_mirror(suite),
        packages=tuple(packages),
        kernel_version=kernel_modules_dir.name if kernel_modules_dir else None,
        modules=tuple(modules) if modules is not None else None)
    mount_if_images_dir(dest_dir)  # HOME/images after a reboot: never its bare mount point
    dest = dest_dir / name
    if dest.exists():
        raise Conflict(f"{dest} already exists",
                       hint="remove the image first (stop serving it: stale handles), or pick "
                            "another name")
    entry = cache_dir / "images" / recipe.key()
    cached = (entry / _COMPLETE).is_file()
    if not cached:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(entry.parent / ".lock"):
            cached = (entry / _COMPLETE).is_file()
            if not cached:
                with tempfile.TemporaryDirectory(dir=entry.parent, prefix=".build-") as tmp:
                    build = Path(tmp) / "entry"
                    build.mkdir()
                    build_root(recipe, build / "root", kernel_modules_dir=kernel_modules_dir,
                               mmdebstrap=mmdebstrap, progress=say)
                    meta = {"recipe": {**asdict(recipe), "init": recipe.init.value},
                            "init_system": detect_init_system(build / "root").value}
                    (build / _COMPLETE).write_text(json.dumps(meta, indent=2) + "\n")
                    if entry.exists():  # a half-finished entry from a crash
                        shutil.rmtree(entry)
                    build.rename(entry)
    say(f"copying {'cached ' if cached else ''}image to {dest}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp_dest = dest_dir / f".{name}.partial"
    if tmp_dest.exists():
        shutil.rmtree(tmp_dest)
    _copy_tree(entry / "root", tmp_dest)
    tmp_dest.rename(dest)
    init_system = detect_init_system(dest)
    if init_system is not init:
        raise BuildError(f"image {name} boots {init_system.value}, expected {init.value}",
                         hint=f"see {entry}/mmdebstrap.log")
    if store is not None:
        put_image(store, name, dest, init_system=init_system,
                  description=f"Debian {suite} minbase + {init.value}")
    seconds = time.monotonic() - started
    log.info("image.created name=%s init=%s cached=%s seconds=%.1f", name, init.value, cached,
             seconds)
    return ImageResult(name=name, root=dest, init_system=init_system, cached=cached,
                       seconds=seconds, cache_entry=entry)


def use_image(store: InventoryStore, root: Path, *, name: str = "default",
              description: str | None = None,
              expose: Sequence[str] | None = None) -> ImageResult:
    """Register an existing root (the seed's way: `/`) as image `name`, init detected.

    For `/`, `oneroot nfs apply` exports a masked read-only view instead of `/` itself.
    """
    started = time.monotonic()
    init_system = detect_init_system(root)
    put_image(store, name, root, init_system=init_system,
              description=description if description is not None else
              ("the server's root, as in the seed (exported as a masked view)"
               if root.resolve() == Path("/") else ""), expose=expose)
    return ImageResult(name=name, root=root.resolve(), init_system=init_system, cached=False,
                       seconds=time.monotonic() - started)
