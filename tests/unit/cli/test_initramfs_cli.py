"""`oneroot initramfs build` end to end: a kernel tree given as a directory, busybox from the
oneroot cache, the initramfs in the boot dir and the kernel copied beside it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from oneroot.cli.main import main
from oneroot.initramfs.kernel import fetch_kernel
from oneroot.testing.cache import suite_cache_dir


def test_build_into_the_boot_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = suite_cache_dir()
    kernel = fetch_kernel(os.environ.get("ONEROOT_KERNEL_VERSION") or None, cache_dir=cache)
    home = tmp_path / "home"
    assert main(["--home", str(home), "init", "--image-root", str(tmp_path)]) == 0
    os.symlink(cache, home / "cache")  # busybox as fetched before, no download here
    capsys.readouterr()
    code = main(["--home", str(home), "initramfs", "build", "--kernel", str(kernel.root),
                 "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    boot = home / "boot"
    assert doc["path"] == str(boot / "initramfs.img") and doc["kernel"] == kernel.version
    assert (boot / "initramfs.img").stat().st_size == doc["size"]
    assert (boot / "vmlinuz").read_bytes() == kernel.vmlinuz.read_bytes()
    assert doc["kernel_copy"] == str(boot / "vmlinuz")
