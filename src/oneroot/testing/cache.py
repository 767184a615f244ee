"""The one download and image cache the whole test suite shares: kernels, busybox and
mmdebstrap images are fetched or built once per machine, whichever test needs them first.

`ONEROOT_CACHE_DIR` names it; otherwise it is oneroot's default, `~/.cache/oneroot` (as root
with HOME unset, Python takes the passwd entry's home: `/root/.cache/oneroot`). The lab and its
supervisor are given this same directory (`--cache-dir`), so an image `test_image_create` built
is the one `lab up` boots, not a second build.
"""

from __future__ import annotations

import os
from pathlib import Path

from oneroot.initramfs.kernel import default_cache_dir


def suite_cache_dir() -> Path:
    """The test suite's cache directory (see the module docstring)."""
    configured = os.environ.get("ONEROOT_CACHE_DIR")
    return Path(configured) if configured else default_cache_dir()
