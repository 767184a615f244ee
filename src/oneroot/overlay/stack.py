"""A node's stack of layers and what each holds at a path, resolved as overlayfs does.

A node's root is a stack: the image (bottom), group layers, then the node's own `upper/` on top.
`Stack` names those directories; a path is resolved through it the way overlayfs does (a
`c 0 0` whiteout or a non-directory hides what is below, an opaque directory hides the contents
below it) and never through a symbolic link: one component at a time from directory
descriptors with `O_NOFOLLOW`, because root on the node writes its `upper/`.

Paths are the node's own (`/etc/motd`); `upper/` is a detail of the layout.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from oneroot.errors import ConfigError, UsageError
from oneroot.fsutil import DIR_FLAGS, fd_opaque, is_whiteout

# -- paths ---------------------------------------------------------------------------------

def node_path(text: str) -> PurePosixPath:
    """A path as the node sees it (`/etc/motd`, `etc/motd`), as components below `/`.

    Refused: NUL, `..`, and `/` itself (every edit names one entry).
    """
    if "\0" in text:
        raise UsageError("a path cannot contain a NUL byte")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UsageError(f"{text!r}: `..` is not allowed",
                         hint="name the path as the node sees it, e.g. /etc/motd")
    if not parts:
        raise UsageError(f"{text!r} names the root directory itself",
                         hint="name a file, e.g. /etc/motd")
    return PurePosixPath(*parts)


def shown(rel: PurePosixPath) -> str:
    return f"/{rel}"


# -- layers --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Layer:
    """One directory of the stack: `base/prefix…` holds the layer's files.

    `hidden` and `emptied` (paths inside the layer) are what the export of this layer masks:
    the masked view of a live `/` hides `etc/shadow`, empties `root/`; nothing reads them here.
    `masked(rel)`, when given, decides it path by path instead (a live root's allowlist,
    which would take a walk of the whole root to list).
    """

    name: str
    base: Path
    prefix: tuple[str, ...] = ()
    hidden: tuple[PurePosixPath, ...] = ()
    emptied: tuple[PurePosixPath, ...] = ()
    masked: Callable[[PurePosixPath], bool] | None = None

    @property
    def root(self) -> Path:
        return self.base.joinpath(*self.prefix)

    def parts(self, rel: PurePosixPath) -> tuple[str, ...]:
        return (*self.prefix, *rel.parts)

    def masks(self, rel: PurePosixPath) -> bool:
        return any(rel == h or h in rel.parents for h in self.hidden) or any(
            e in rel.parents for e in self.emptied) or (
            self.masked is not None and self.masked(rel))


@dataclass(frozen=True, slots=True, kw_only=True)
class Stack:
    """A node's layers: `lowers` bottom first (image, group layers), `upper` the node's own,
    `work` its union scratch dir (`<node>/work`)."""

    node: str
    upper: Layer
    lowers: tuple[Layer, ...]
    work: Layer | None = None


class EntryType(enum.StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    WHITEOUT = "whiteout"
    DEVICE = "device"
    FIFO = "fifo"
    SOCKET = "socket"


def entry_type(st: os.stat_result) -> EntryType:
    m = st.st_mode
    if stat.S_ISREG(m):
        return EntryType.FILE
    if stat.S_ISDIR(m):
        return EntryType.DIR
    if stat.S_ISLNK(m):
        return EntryType.SYMLINK
    if is_whiteout(st):
        return EntryType.WHITEOUT
    if stat.S_ISCHR(m) or stat.S_ISBLK(m):
        return EntryType.DEVICE
    if stat.S_ISFIFO(m):
        return EntryType.FIFO
    return EntryType.SOCKET


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """What one layer holds at a path."""

    layer: Layer
    rel: PurePosixPath
    st: os.stat_result
    target: str | None = None  # a symbolic link's text
    opaque: bool = False

    @property
    def type(self) -> EntryType:
        return entry_type(self.st)

    @property
    def location(self) -> Path:
        return self.layer.root / self.rel

    @property
    def attrs(self) -> tuple[int, int, int]:
        return stat.S_IMODE(self.st.st_mode), self.st.st_uid, self.st.st_gid

    def to_json(self) -> dict[str, object]:
        return {"layer": self.layer.name, "path": str(self.location), "type": str(self.type),
                "mode": f"{stat.S_IMODE(self.st.st_mode):04o}", "uid": self.st.st_uid,
                "gid": self.st.st_gid, "size": self.st.st_size, "target": self.target}


class ProbeState(enum.Enum):
    FOUND = "found"
    MISSING = "missing"      # not here; look in the layer below
    BLOCKED = "blocked"      # hidden from every layer below (whiteout, file or opaque dir)
    LINK = "link"            # a parent is a symbolic link in this layer


@dataclass(frozen=True, slots=True)
class Probe:
    state: ProbeState
    entry: Entry | None = None
    link: PurePosixPath | None = None


def probe_layer(layer: Layer, rel: PurePosixPath) -> Probe:
    parts = rel.parts
    if layer.masks(rel):
        return Probe(ProbeState.BLOCKED)
    try:
        fd = os.open(layer.base, DIR_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return Probe(ProbeState.MISSING)
    try:
        opaque = False
        for i, name in enumerate((*layer.prefix, *parts[:-1])):
            try:
                st = os.lstat(name, dir_fd=fd)
            except FileNotFoundError:
                return Probe(ProbeState.BLOCKED if opaque else ProbeState.MISSING)
            inside = i >= len(layer.prefix)
            if stat.S_ISLNK(st.st_mode) and inside:
                return Probe(ProbeState.LINK, link=PurePosixPath(
                    *parts[: i - len(layer.prefix) + 1]))
            if not stat.S_ISDIR(st.st_mode):
                if not inside:
                    raise ConfigError(f"{layer.base}/{'/'.join(layer.prefix[: i + 1])} is not "
                                      "a directory (a link put there by the node?)",
                                      hint="inspect the layer; oneroot does not follow links")
                return Probe(ProbeState.BLOCKED)
            nfd = os.open(name, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
            if inside and fd_opaque(fd):
                opaque = True
        try:
            st = os.lstat(parts[-1], dir_fd=fd)
        except FileNotFoundError:
            return Probe(ProbeState.BLOCKED if opaque else ProbeState.MISSING)
        target = os.readlink(parts[-1], dir_fd=fd) if stat.S_ISLNK(st.st_mode) else None
        is_opaque = False
        if stat.S_ISDIR(st.st_mode):
            dfd = os.open(parts[-1], DIR_FLAGS, dir_fd=fd)
            try:
                is_opaque = fd_opaque(dfd)
            finally:
                os.close(dfd)
        return Probe(ProbeState.FOUND, Entry(layer=layer, rel=rel, st=st, target=target,
                                          opaque=is_opaque))
    finally:
        os.close(fd)


def layer_entry(layer: Layer, rel: PurePosixPath) -> Entry | None:
    """What `layer` itself holds at `rel` (None: nothing); a parent that is not a directory
    there (a link, a file, a whiteout) is an error: nothing is read or written through it."""
    probe = probe_layer(dataclasses.replace(layer, hidden=(), emptied=(), masked=None), rel)
    if probe.state is ProbeState.LINK:
        raise ConfigError(f"{shown(probe.link or rel)} is a symbolic link in {layer.name}",
                          hint="oneroot never writes through links: remove it first "
                               f"(`oneroot overlay rm NODE {shown(probe.link or rel)}`)")
    if probe.state is ProbeState.BLOCKED and len(rel.parts) > 1:
        parent = _blocking_parent(layer, rel)
        if parent != rel:
            raise ConfigError(f"{shown(parent)} is not a directory in {layer.name} (masked "
                              "or replaced)",
                              hint=f"remove it first (`oneroot overlay rm NODE {shown(parent)}`)")
    return probe.entry


def upper_entry(stack: Stack, rel: PurePosixPath) -> Entry | None:
    """The node's own entry at `rel`."""
    return layer_entry(stack.upper, rel)


def _blocking_parent(layer: Layer, rel: PurePosixPath) -> PurePosixPath:
    for parent in reversed(rel.parents[:-1] if len(rel.parts) > 1 else ()):
        p = probe_layer(layer, parent)
        if (p.state is ProbeState.FOUND and p.entry is not None
                and p.entry.type is not EntryType.DIR):
            return parent
    return rel


def lower_entry(stack: Stack, rel: PurePosixPath) -> Entry | None:
    """What the node sees at `rel` without its own layer: the topmost lower entry, or None.

    A whiteout in a group layer means nothing (None). A path through a symbolic link in a
    lower layer (`/lib/…` on a merged-/usr image) is refused with the link's name.
    """
    for layer in reversed(stack.lowers):
        probe = probe_layer(layer, rel)
        if probe.state is ProbeState.FOUND:
            assert probe.entry is not None
            return None if probe.entry.type is EntryType.WHITEOUT else probe.entry
        if probe.state is ProbeState.BLOCKED:
            return None
        if probe.state is ProbeState.LINK:
            raise UsageError(f"{shown(probe.link or rel)} is a symbolic link in {layer.name}",
                             hint="name the path it points to")
    return None
