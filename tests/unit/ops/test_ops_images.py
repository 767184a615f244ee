"""`create_image` around a stand-in mmdebstrap: the cache key, a cache hit is a copy, the
destination is never overwritten; the host mirror is read from apt's sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from oneroot.errors import Conflict
from oneroot.model import InitSystem
from oneroot.ops.images import ImageRecipe, create_image, host_debian_mirror

FAKE = """#!/bin/sh
# args: options... SUITE TARGET SOURCE
echo "$@" >> {calls}
target=""
for a; do case "$a" in -*) ;; *) [ -z "$suite" ] && suite="$a" && continue; \
  [ -z "$target" ] && target="$a";; esac; done
mkdir -p "$target/lib/systemd" "$target/sbin"
touch "$target/lib/systemd/systemd"
ln -s /lib/systemd/systemd "$target/sbin/init"
"""


@pytest.fixture
def mmdebstrap(tmp_path: Path) -> tuple[str, Path]:
    calls = tmp_path / "calls"
    script = tmp_path / "mmdebstrap"
    script.write_text(FAKE.format(calls=calls))
    script.chmod(0o755)
    return str(script), calls


def test_second_create_comes_from_the_cache(tmp_path: Path,
                                            mmdebstrap: tuple[str, Path]) -> None:
    tool, calls = mmdebstrap
    kw = dict(dest_dir=tmp_path / "images", cache_dir=tmp_path / "cache",
              mirror="http://mirror.test/debian", mmdebstrap=tool)
    first = create_image(None, "a", **kw)  # type: ignore[arg-type]
    second = create_image(None, "b", **kw)  # type: ignore[arg-type]
    assert (first.cached, second.cached) == (False, True)
    assert first.init_system is InitSystem.SYSTEMD and (second.root / "sbin/init").is_symlink()
    line = calls.read_text().splitlines()
    assert len(line) == 1  # built once
    assert "--variant=minbase" in line[0]
    assert "--include=systemd-sysv,udev,kmod,iproute2" in line[0]
    assert line[0].endswith("deb http://mirror.test/debian bookworm main")
    with pytest.raises(Conflict):
        create_image(None, "a", **kw)  # type: ignore[arg-type]


def test_recipe_key_depends_on_every_input() -> None:
    base = ImageRecipe()
    keys = {base.key(), ImageRecipe(init=InitSystem.OPENRC).key(),
            ImageRecipe(suite="trixie").key(), ImageRecipe(modules=("nfs",)).key(),
            ImageRecipe(kernel_version="6.1.0-56-amd64").key(),
            ImageRecipe(mirror="http://other/debian").key(), ImageRecipe(packages=("vim",)).key()}
    assert len(keys) == 7
    assert ImageRecipe(modules=("a", "b")).key() == ImageRecipe(modules=("b", "a")).key()
    assert "sysvinit-core" in ImageRecipe(init=InitSystem.OPENRC).all_packages()


def test_host_mirror_from_deb822_and_one_line(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://deb.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\n# comment\nURIs: http://deb.example/debian/\nSuites: bookworm "
        "bookworm-updates\nComponents: main\n")
    assert host_debian_mirror("bookworm", tmp_path) == "http://deb.example/debian"
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://one.example/debian "
                                           "bookworm main\n")
    assert host_debian_mirror("bookworm", tmp_path) == "http://one.example/debian"
    assert host_debian_mirror("sid", tmp_path).startswith("http://deb.debian.org")
