"""Paths inside a tree that is some other machine's `/` (an image): its links, absolute ones
included, followed as that machine would follow them, never out of the tree.

An image is hostile input: its `/lib` may point anywhere on the server, and the host's kernel
would resolve `tree/lib/...` through it against the server's own `/`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from oneroot.errors import InvalidValue

MAX_LINKS = 40  # as the kernel's own limit on links in one lookup


def resolve_inside(tree: Path, rel: str) -> Path:
    """`tree/rel` with every link in it followed as if `tree` were `/`: the real path of what
    a node would see at `/rel`, always inside `tree`. Missing components are fine (the rest is
    appended). An image is hostile input: its `/lib` may point anywhere on the server."""
    parts = [p for p in PurePosixPath(rel).parts if p not in ("/", ".")]
    done: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        here = tree.joinpath(*done, part)
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            return tree.joinpath(*done, part, *parts)
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_LINKS:
                raise InvalidValue(f"too many links resolving /{rel} in the image",
                                   hint="the image's links loop; fix it and import again")
            target = PurePosixPath(os.readlink(here))
            if target.is_absolute():
                done = []
            parts = [p for p in target.parts if p not in ("/", ".")] + parts
            continue
        done.append(part)
    return tree.joinpath(*done)
