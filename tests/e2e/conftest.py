"""Shared fixtures for the QEMU tests: the cached Debian kernel, the private busybox and the
marker initramfs, each made once per session. Downloads land in the oneroot cache
(`ONEROOT_CACHE_DIR`, default ~/.cache/oneroot), so only the first run fetches anything."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from oneroot.initramfs.busybox import Busybox, fetch_busybox
from oneroot.initramfs.kernel import Kernel, fetch_kernel
from oneroot.initramfs.marker import build_marker_initramfs
from oneroot.testing.cache import suite_cache_dir


def _require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)}")


@pytest.fixture(scope="session")
def oneroot_cache() -> Path:
    return suite_cache_dir()


@pytest.fixture(scope="session")
def node_kernel(oneroot_cache: Path) -> Kernel:
    """Debian's current linux-image (the version linux-image-amd64 depends on)."""
    _require("apt-get", "apt-cache", "dpkg-deb", "depmod")
    return fetch_kernel(os.environ.get("ONEROOT_KERNEL_VERSION") or None,
                        cache_dir=oneroot_cache)


@pytest.fixture(scope="session")
def busybox(oneroot_cache: Path) -> Busybox:
    _require("apt-get", "apt-cache", "dpkg-deb")
    return fetch_busybox(cache_dir=oneroot_cache)


@pytest.fixture(scope="session")
def marker_initramfs(busybox: Busybox, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_marker_initramfs(busybox, tmp_path_factory.mktemp("marker") / "marker.img")


@pytest.fixture
def qemu_available() -> None:
    _require("qemu-system-x86_64")


@pytest.fixture
def lab_available() -> None:
    if os.geteuid() != 0:
        pytest.skip("the lab creates network namespaces: run as root")
    _require("ip", "qemu-system-x86_64")


@pytest.fixture(scope="module", params=["client", "server"])
def union(request: pytest.FixtureRequest) -> str:
    """Where a module's nodes union their layers: in their initramfs (`client`), or on the
    server (`server`, issue 6's server-side union). A module asking for it runs twice."""
    return str(request.param)
