"""`create_image`: a real mmdebstrap build (cached in the suite's one cache, which the lab uses
too, so only the first run on a machine pays ~1 min), the lab subset of the node kernel's
modules, the init system detected, and a second create served from the cache in seconds.
Needs root and the Debian mirror."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from oneroot.initramfs.kernel import fetch_kernel
from oneroot.model import InitSystem
from oneroot.ops.images import LAB_MODULES, create_image, host_debian_mirror
from oneroot.ops.nodes_fs import image_network_stacks
from oneroot.testing.cache import suite_cache_dir

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="mmdebstrap --mode=root needs root"),
    pytest.mark.skipif(shutil.which("mmdebstrap") is None, reason="needs mmdebstrap"),
]

CACHE = suite_cache_dir()  # the lab builds its image there too: one build per machine


def test_create_systemd_image_then_cached(tmp_path: Path) -> None:
    kernel = fetch_kernel(cache_dir=suite_cache_dir())
    timings = {}
    for name in ("first", "second"):
        started = time.monotonic()
        result = create_image(None, name, dest_dir=tmp_path, cache_dir=CACHE,
                              kernel_modules_dir=kernel.modules_dir, modules=LAB_MODULES,
                              progress=print)
        timings[name] = (result.cached, time.monotonic() - started)
        assert result.init_system is InitSystem.SYSTEMD
        root = result.root
        assert (root / "sbin/init").is_symlink()
        moddir = root / "lib/modules" / kernel.version
        dep = (moddir / "modules.dep").read_text()
        assert "virtio_net.ko" in dep and "nfsv4.ko" in dep and "overlay.ko" in dep
        assert not (moddir / "kernel/sound").exists()  # the subset, not the 400 MiB tree
        assert (root / "usr/bin/kmod").exists() or (root / "bin/kmod").exists()
        assert image_network_stacks(root) == (True, False)  # networkd yes, ifupdown no
    print(f"image create: {timings}")
    assert timings["second"][0] is True
    assert timings["second"][1] < 30  # a copy, not a build


def test_host_mirror_is_the_configured_debian_one() -> None:
    assert host_debian_mirror("bookworm").startswith("http")
