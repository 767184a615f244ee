"""`oneroot image import`: OCI images built here with Debian's umoci (and written as an
oci-archive and a docker-archive with skopeo) from the mmdebstrap tree `image create` makes,
including a layer with a file whiteout and one with an opaque-directory whiteout. No registry
is reached. Also: an image that tries to make the import write outside it, one with no init
system, and a file that is not an image."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from oneroot.initramfs.kernel import Kernel, fetch_kernel
from oneroot.ops.images import LAB_MODULES, create_image
from oneroot.testing.cache import suite_cache_dir

pytestmark = pytest.mark.integration

ONEROOT = [sys.executable, "-m", "oneroot"]
CACHE = suite_cache_dir()  # the lab builds its image there too: one build per machine


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=600)


def _file(path: str, data: bytes = b"", *, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(path)
    info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
    return info, data


def _link(path: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(path)
    info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, 1_700_000_000
    return info, b""


def _dir(path: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(path)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
    return info, b""


def _layer(path: Path, entries: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return path


def _layout(where: Path, layers: list[Path]) -> Path:
    """An OCI layout `where` with tag `t`: the layers in order (umoci raw add-layer)."""
    _run("umoci", "init", "--layout", str(where))
    _run("umoci", "new", "--image", f"{where}:t")
    for layer in layers:
        _run("umoci", "raw", "add-layer", "--image", f"{where}:t", str(layer))
    return where


@dataclass
class Images:
    kernel: Kernel
    layout: Path
    oci_archive: Path
    docker_archive: Path
    no_init: Path
    escaping: Path
    outside: Path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    kernel = fetch_kernel(cache_dir=suite_cache_dir())
    tmp = tmp_path_factory.mktemp("oci")
    base_tree = create_image(None, "base", dest_dir=tmp / "trees", cache_dir=CACHE,
                             kernel_modules_dir=kernel.modules_dir, modules=LAB_MODULES,
                             progress=print).cache_entry / "root"
    started = time.monotonic()
    base = tmp / "base.tar"  # the mmdebstrap tree without its kernel modules: import adds them
    _run("tar", "-C", str(base_tree), "--numeric-owner", "--xattrs", "--exclude",
         "./usr/lib/modules", "--exclude", "./lib/modules", "-cf", str(base), ".")
    add = _layer(tmp / "add.tar", [
        _dir("opt/"), _dir("opt/app/"), _file("opt/app/keep", b"kept\n"),
        _file("opt/app/gone", b"removed by the next layer\n"), _dir("opt/cache/"),
        _file("opt/cache/old1", b"1"), _file("opt/cache/old2", b"2"),
        _file("etc/.wh.issue.net"),  # a file of the base layer, whited out
        _file("etc/motd", b"from layer 2\n")])
    whiteouts = _layer(tmp / "whiteouts.tar", [
        _file("opt/app/.wh.gone"),  # a file whiteout
        _file("opt/cache/.wh..wh..opq"), _file("opt/cache/new", b"new\n")])  # opaque dir
    layout = _layout(tmp / "layout", [base, add, whiteouts])
    oci_archive, docker_archive = tmp / "image.oci.tar", tmp / "image.docker.tar"
    _run("skopeo", "copy", "--quiet", f"oci:{layout}:t", f"oci-archive:{oci_archive}:t")
    _run("skopeo", "copy", "--quiet", f"oci:{layout}:t",
         f"docker-archive:{docker_archive}:oneroot/test:t")
    outside = tmp / "outside"
    outside.mkdir()
    escaping = _layout(tmp / "escaping", [_layer(tmp / "escape.tar", [
        _dir("usr/"), _dir("usr/lib/"), _dir("usr/lib/systemd/"),
        _file("usr/lib/systemd/systemd", b"#!/bin/sh\n", mode=0o755), _dir("sbin/"),
        _link("sbin/init", "/usr/lib/systemd/systemd"),
        _link("lib", str(outside)),  # an absolute link out of the image, onto the server
        _file("../../../escaped", b"x")])])
    no_init = _layout(tmp / "no-init", [_layer(tmp / "plain.tar", [_file("etc/hostname",
                                                                         b"x\n")])])
    print(f"OCI images built in {time.monotonic() - started:.1f} s")
    yield Images(kernel=kernel, layout=layout, oci_archive=oci_archive,
                 docker_archive=docker_archive, no_init=no_init, escaping=escaping,
                 outside=outside)


@pytest.fixture
def home(tmp_path: Path, images: Images) -> Path:
    home = tmp_path / "home"
    subprocess.run([*ONEROOT, "--home", str(home), "init", "--server", "10.88.0.1", "--subnet",
                    "10.88.0.0/24", "--image-root", str(tmp_path), "--boot-dir",
                    str(tmp_path / "boot")], check=True, capture_output=True)
    (home / "cache").symlink_to(suite_cache_dir())  # the node kernel, already fetched
    return home


def oneroot(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ONEROOT, "--home", str(home), *args], capture_output=True,
                          text=True, timeout=600)


def _import(home: Path, images: Images, source: Path, *extra: str) -> dict[str, object]:
    done = oneroot(home, "image", "import", "app", str(source), "--kernel",
                   images.kernel.version, "--lab-modules", "--json", *extra)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def _check_tree(root: Path, kernel: Kernel) -> None:
    assert (root / "opt/app/keep").read_text() == "kept\n"
    assert not (root / "opt/app/gone").exists()  # file whiteout
    assert sorted(os.listdir(root / "opt/cache")) == ["new"]  # opaque: old1, old2 gone
    assert not (root / "etc/issue.net").exists() and (root / "etc/issue").exists()
    assert (root / "etc/motd").read_text() == "from layer 2\n"
    left = [p for d in ("opt", "etc") for p in (root / d).rglob(".wh.*")]
    assert left == []  # no OCI marker survives: the version is a flat tree
    dep = (root / "lib/modules" / kernel.version / "modules.dep").read_text()
    assert "overlay.ko" in dep and "nfsv4.ko" in dep
    assert (root / "sbin/init").is_symlink()


def test_layout_then_archives_become_versions(home: Path, images: Images) -> None:
    first = _import(home, images, images.layout)
    assert (first["image"], first["version"], first["kind"]) == ("app", 1, "oci")
    assert first["init_system"] == "systemd"
    _check_tree(Path(str(first["root"])), images.kernel)
    for number, (source, kind) in enumerate(
            [(images.oci_archive, "oci-archive"), (images.docker_archive, "docker-archive")],
            start=2):
        result = _import(home, images, source)
        assert (result["version"], result["kind"]) == (number, kind)
        _check_tree(Path(str(result["root"])), images.kernel)
    listed = json.loads(oneroot(home, "image", "versions", "app", "--json").stdout)
    versions = {v["version"]: v for v in listed["versions"]}
    assert set(versions) == {1, 2, 3}
    assert versions[3]["state"] == "complete" and versions[3]["parent"] == 2
    assert "image import" in versions[3]["command"]
    assert "docker" in versions[3]["command"]
    builds = [p.name for p in (home / "images" / "app.versions").iterdir()
              if p.name.startswith(".") and p.name != ".lock"]
    assert builds == []  # nothing half made left behind


def test_a_link_out_of_the_image_cannot_make_the_import_write_on_the_server(
        home: Path, images: Images) -> None:
    """The image's /lib points at a server directory: the modules go where a node would see
    /lib/modules (inside the image), and the server directory stays empty. umoci keeps the
    `../../../escaped` entry inside the tree as well."""
    result = _import(home, images, images.escaping)
    root = Path(str(result["root"]))
    assert list(images.outside.iterdir()) == []
    inside = root / str(images.outside).lstrip("/") / "modules" / images.kernel.version
    assert (inside / "modules.dep").is_file()
    assert not (root.parent / "escaped").exists() and not Path("/escaped").exists()


def test_no_init_system_is_refused_and_nothing_is_recorded(home: Path, images: Images) -> None:
    done = oneroot(home, "image", "import", "app", str(images.no_init), "--no-modules")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error:") and "init system" in lines[0], done.stderr
    assert lines[1].startswith("hint:") and "Traceback" not in done.stderr
    listed = json.loads(oneroot(home, "image", "list", "--json").stdout)
    assert "app" not in json.dumps(listed)
    assert not (home / "images" / "app").exists()
    assert [p.name for p in (home / "images").iterdir() if p.name.startswith(".app")] == []


@pytest.mark.parametrize("kind", ["directory", "tarball", "missing"])
def test_what_is_not_an_image_gets_one_error_and_a_hint(home: Path, tmp_path: Path,
                                                        kind: str) -> None:
    source = tmp_path / "thing"
    if kind == "directory":
        source.mkdir()
    elif kind == "tarball":
        _layer(source, [_file("etc/hostname", b"x\n")])
    done = oneroot(home, "image", "import", "app", str(source), "--no-modules")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error:") and lines[1].startswith("hint:"), \
        done.stderr
