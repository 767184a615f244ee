"""The fixtures of the initramfs script tests: a private busybox, a fake node
(`oneroot.testing.initsh`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from oneroot.testing.initsh import fake_node, private_busybox


@pytest.fixture(scope="module")
def bbdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private busybox (the system one may be replaced) with a link per applet."""
    found = shutil.which("busybox") or "/bin/busybox"
    if not Path(found).exists():
        pytest.skip("busybox is not installed")
    return private_busybox(Path(found), tmp_path_factory.mktemp("bb") / "bin")


@pytest.fixture
def node(tmp_path: Path) -> Path:
    """A fake node: the script tree, /run/oneroot, /sys/class/net/eth0, a sysroot."""
    return fake_node(tmp_path)
