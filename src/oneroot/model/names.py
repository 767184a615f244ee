"""The one rule for names of nodes, groups, images and runlevels."""

from __future__ import annotations

import re

from oneroot.errors import InvalidValue

_NAME = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$")


def check_name(kind: str, name: str) -> str:
    """Names become host names, file names and NFS paths: keep them DNS-label safe."""
    if not _NAME.match(name):
        raise InvalidValue(
            f"invalid {kind} name {name!r}",
            hint="use 1-63 lowercase letters, digits, '-' or '_', starting and ending with a "
            "letter or digit",
        )
    return name
