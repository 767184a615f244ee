"""What a node changed in its diff-overlay, and the edits made to it from the server.

A node's root is a stack: the image (bottom), group layers, then the node's own `upper/` on top.
`Stack` names those directories; everything here resolves a path through it the way overlayfs
does (a `c 0 0` whiteout or a non-directory hides what is below, an opaque directory hides the
contents below it) and never follows a symbolic link: paths are walked one component at a time
from directory descriptors with `O_NOFOLLOW`, because root on the node writes its `upper/`.
Every write goes to a temp name in the target directory, is fsynced and renamed into place.

Paths are the node's own (`/etc/motd`); `upper/` is a detail of the layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import enum
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from oneroot.errors import ConfigError, Conflict, UsageError
from oneroot.overlay.archive import DIR_FLAGS, FILE_FLAGS, empty_dir, open_tree, walk
from oneroot.overlay.layer import OPAQUE_XATTR, WHITEOUT_DEVICE, is_whiteout

TEXT_DIFF_LIMIT = 4 << 20  # bytes; larger files get the binary summary
_COPY_CHUNK = 1 << 20
_SKIP_XATTR_PREFIX = "trusted.overlay."


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
    """

    name: str
    base: Path
    prefix: tuple[str, ...] = ()
    hidden: tuple[PurePosixPath, ...] = ()
    emptied: tuple[PurePosixPath, ...] = ()

    @property
    def root(self) -> Path:
        return self.base.joinpath(*self.prefix)

    def parts(self, rel: PurePosixPath) -> tuple[str, ...]:
        return (*self.prefix, *rel.parts)

    def masks(self, rel: PurePosixPath) -> bool:
        return any(rel == h or h in rel.parents for h in self.hidden) or any(
            e in rel.parents for e in self.emptied)


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


class _State(enum.Enum):
    FOUND = "found"
    MISSING = "missing"      # not here; look in the layer below
    BLOCKED = "blocked"      # hidden from every layer below (whiteout, file or opaque dir)
    LINK = "link"            # a parent is a symbolic link in this layer


@dataclass(frozen=True, slots=True)
class _Probe:
    state: _State
    entry: Entry | None = None
    link: PurePosixPath | None = None


def _fd_opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, OPAQUE_XATTR) == b"y"
    except OSError:
        return False


def _probe(layer: Layer, rel: PurePosixPath) -> _Probe:
    parts = rel.parts
    if layer.masks(rel):
        return _Probe(_State.BLOCKED)
    try:
        fd = os.open(layer.base, DIR_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return _Probe(_State.MISSING)
    try:
        opaque = False
        for i, name in enumerate((*layer.prefix, *parts[:-1])):
            try:
                st = os.lstat(name, dir_fd=fd)
            except FileNotFoundError:
                return _Probe(_State.BLOCKED if opaque else _State.MISSING)
            inside = i >= len(layer.prefix)
            if stat.S_ISLNK(st.st_mode) and inside:
                return _Probe(_State.LINK, link=PurePosixPath(
                    *parts[: i - len(layer.prefix) + 1]))
            if not stat.S_ISDIR(st.st_mode):
                if not inside:
                    raise ConfigError(f"{layer.base}/{'/'.join(layer.prefix[: i + 1])} is not "
                                      "a directory (a link put there by the node?)",
                                      hint="inspect the layer; oneroot does not follow links")
                return _Probe(_State.BLOCKED)
            nfd = os.open(name, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
            if inside and _fd_opaque(fd):
                opaque = True
        try:
            st = os.lstat(parts[-1], dir_fd=fd)
        except FileNotFoundError:
            return _Probe(_State.BLOCKED if opaque else _State.MISSING)
        target = os.readlink(parts[-1], dir_fd=fd) if stat.S_ISLNK(st.st_mode) else None
        is_opaque = False
        if stat.S_ISDIR(st.st_mode):
            dfd = os.open(parts[-1], DIR_FLAGS, dir_fd=fd)
            try:
                is_opaque = _fd_opaque(dfd)
            finally:
                os.close(dfd)
        return _Probe(_State.FOUND, Entry(layer=layer, rel=rel, st=st, target=target,
                                          opaque=is_opaque))
    finally:
        os.close(fd)


def layer_entry(layer: Layer, rel: PurePosixPath) -> Entry | None:
    """What `layer` itself holds at `rel` (None: nothing); a parent that is not a directory
    there (a link, a file, a whiteout) is an error: nothing is read or written through it."""
    probe = _probe(dataclasses.replace(layer, hidden=(), emptied=()), rel)
    if probe.state is _State.LINK:
        raise ConfigError(f"{shown(probe.link or rel)} is a symbolic link in {layer.name}",
                          hint="oneroot never writes through links: remove it first "
                               f"(`oneroot overlay rm NODE {shown(probe.link or rel)}`)")
    if probe.state is _State.BLOCKED and len(rel.parts) > 1:
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
        p = _probe(layer, parent)
        if p.state is _State.FOUND and p.entry is not None and p.entry.type is not EntryType.DIR:
            return parent
    return rel


def lower_entry(stack: Stack, rel: PurePosixPath) -> Entry | None:
    """What the node sees at `rel` without its own layer: the topmost lower entry, or None.

    A whiteout in a group layer means nothing (None). A path through a symbolic link in a
    lower layer (`/lib/…` on a merged-/usr image) is refused with the link's name.
    """
    for layer in reversed(stack.lowers):
        probe = _probe(layer, rel)
        if probe.state is _State.FOUND:
            assert probe.entry is not None
            return None if probe.entry.type is EntryType.WHITEOUT else probe.entry
        if probe.state is _State.BLOCKED:
            return None
        if probe.state is _State.LINK:
            raise UsageError(f"{shown(probe.link or rel)} is a symbolic link in {layer.name}",
                             hint="name the path it points to")
    return None


# -- listing and diffs ---------------------------------------------------------------------

class ChangeKind(enum.StrEnum):
    OVERRIDE = "override"  # the node's own version of a lower file (or a dir's owner/mode)
    ADD = "add"            # only the node has it
    MASK = "mask"          # a whiteout: the node deleted the lower file
    OPAQUE = "opaque"      # a directory that hides everything the lower one holds


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    rel: PurePosixPath
    kind: ChangeKind
    node: Entry
    lower: Entry | None
    generated: bool = False

    def to_json(self) -> dict[str, object]:
        return {"path": shown(self.rel), "change": str(self.kind), "type": str(self.node.type),
                "generated": self.generated, "node": self.node.to_json(),
                "hides": self.lower.to_json() if self.lower else None}


def classify(stack: Stack, node: Entry, *, generated: bool = False) -> Change | None:
    """The change `node` (an upper entry) makes, or None for a plain directory."""
    lower = lower_entry(stack, node.rel)
    if node.type is EntryType.WHITEOUT:
        kind = ChangeKind.MASK
    elif node.type is EntryType.DIR and lower is not None and lower.type is EntryType.DIR:
        if node.opaque:
            kind = ChangeKind.OPAQUE
        elif node.attrs != lower.attrs:
            kind = ChangeKind.OVERRIDE
        else:
            return None
    else:
        kind = ChangeKind.ADD if lower is None else ChangeKind.OVERRIDE
    return Change(rel=node.rel, kind=kind, node=node, lower=lower, generated=generated)


def list_changes(stack: Stack, under: PurePosixPath | None = None, *,
                 generated: frozenset[PurePosixPath] = frozenset()) -> list[Change]:
    """Every change in the node's layer below `under` (everything when None), by path."""
    out: list[Change] = []
    if under is not None:
        top = upper_entry(stack, under)
        if top is None:
            return out
        change = classify(stack, top, generated=under in generated)
        if change is not None:
            out.append(change)
        if top.type is not EntryType.DIR:
            return out
    start = under.parts if under is not None else ()
    with open_tree(stack.upper.base, stack.upper.parts(PurePosixPath(*start))) as fd:
        for parts, st, pfd in walk(fd, start):
            rel = PurePosixPath(*parts)
            target = os.readlink(parts[-1], dir_fd=pfd) if stat.S_ISLNK(st.st_mode) else None
            opaque = False
            if stat.S_ISDIR(st.st_mode):
                with contextlib.suppress(OSError):
                    dfd = os.open(parts[-1], DIR_FLAGS, dir_fd=pfd)
                    try:
                        opaque = _fd_opaque(dfd)
                    finally:
                        os.close(dfd)
            entry = Entry(layer=stack.upper, rel=rel, st=st, target=target, opaque=opaque)
            change = classify(stack, entry, generated=rel in generated)
            if change is not None:
                out.append(change)
    return out


def _read_entry(entry: Entry, limit: int | None = None) -> bytes:
    """A regular file's bytes, read through a descriptor opened without following links."""
    layer, parts = entry.layer, entry.layer.parts(entry.rel)
    with open_tree(layer.base, parts[:-1]) as dfd:
        fd = os.open(parts[-1], FILE_FLAGS, dir_fd=dfd)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ConfigError(f"{shown(entry.rel)} in {layer.name} is not a regular file")
            return f.read() if limit is None else f.read(limit)


def _is_text(data: bytes) -> bool:
    if b"\0" in data[:8192]:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _summary(entry: Entry) -> str:
    data = _read_entry(entry)
    return f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}"


def diff_change(stack: Stack, change: Change) -> str:
    """A unified diff (text files), else one line saying what changed."""
    node, lower, path = change.node, change.lower, shown(change.rel)
    if change.kind is ChangeKind.MASK:
        what = f" (hides {lower.layer.name} {lower.type})" if lower else ""
        return f"masked: {path}{what}\n"
    if change.kind is ChangeKind.ADD:
        extra = f" -> {node.target}" if node.target is not None else ""
        return f"added: {path} ({node.type}{extra})\n"
    if change.kind is ChangeKind.OPAQUE:
        return f"opaque: {path} (the node's directory hides everything in the one below)\n"
    assert lower is not None
    notes = []
    if node.attrs != lower.attrs:
        notes.append("mode/owner: {:04o} {}:{} -> {:04o} {}:{}".format(*lower.attrs,
                                                                       *node.attrs))
    if node.type is not lower.type:
        link = f" {node.target}" if node.target is not None else ""
        notes.append(f"type: {lower.type} -> {node.type}{link}")
    elif node.type is EntryType.SYMLINK and node.target != lower.target:
        notes.append(f"symlink: {lower.target} -> {node.target}")
    body = ""
    if node.type is EntryType.FILE and lower.type is EntryType.FILE:
        big = max(node.st.st_size, lower.st.st_size) > TEXT_DIFF_LIMIT
        old = b"" if big else _read_entry(lower)
        new = b"" if big else _read_entry(node)
        if not big and old == new:
            notes.append("same content")
        elif not big and _is_text(old) and _is_text(new):
            body = "".join(difflib.unified_diff(
                old.decode().splitlines(keepends=True), new.decode().splitlines(keepends=True),
                fromfile=f"{path} ({lower.layer.name})", tofile=f"{path} (node {stack.node})"))
            if body and not body.endswith("\n"):
                body += "\n\\ No newline at end of file\n"
        else:
            notes.append(f"binary: {lower.layer.name} {_summary(lower)}; "
                         f"node {_summary(node)}")
    head = "".join(f"{path}: {n}\n" for n in notes)
    return head + body if (head or body) else f"{path}: no difference\n"


# -- writing -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Attrs:
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime_ns: int | None = None
    xattrs: Mapping[str, bytes] = field(default_factory=dict)


def _dir_attrs_for(stack: Stack, layer: Layer, rel: PurePosixPath) -> dict[
        tuple[str, ...], tuple[int, int, int]]:
    """Owner and mode, as the node sees them below `layer`, of each parent dir of `rel`:
    an upper directory's attributes hide the lower one's."""
    out: dict[tuple[str, ...], tuple[int, int, int]] = {}
    for parent in reversed(rel.parents[:-1] if len(rel.parts) > 1 else ()):
        below = lower_entry(stack, parent)
        if below is None:
            below = upper_entry(stack, parent) if layer is not stack.upper else None
        if below is not None and below.type is EntryType.DIR:
            out[layer.parts(parent)] = below.attrs
    return out


@contextlib.contextmanager
def _open_parent(layer: Layer, rel: PurePosixPath,
                 dir_attrs: Mapping[tuple[str, ...], tuple[int, int, int]]) -> Iterator[int]:
    """The parent directory of `rel` in `layer`, made (with `dir_attrs`) where missing.

    A whiteout, link or file where a directory is needed is refused, not replaced.
    """
    parts = layer.parts(rel)[:-1]
    fd = os.open(layer.base, DIR_FLAGS)
    try:
        for i, name in enumerate(parts):
            try:
                st: os.stat_result | None = os.lstat(name, dir_fd=fd)
            except FileNotFoundError:
                st = None
            if st is None:
                mode, uid, gid = dir_attrs.get(parts[: i + 1], (0o755, 0, 0))
                os.mkdir(name, mode, dir_fd=fd)
                if os.geteuid() == 0:
                    os.chown(name, uid, gid, dir_fd=fd, follow_symlinks=False)
                os.chmod(name, mode, dir_fd=fd)
            elif not stat.S_ISDIR(st.st_mode):
                where = PurePosixPath(*parts[len(layer.prefix): i + 1])
                raise ConfigError(
                    f"{shown(where)} is a {entry_type(st)} in {layer.name}, not a directory",
                    hint="remove it from the layer first (`oneroot overlay rm`); oneroot "
                         "never writes through links")
            nfd = os.open(name, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
        yield fd
    finally:
        os.close(fd)


def _finish(tmp: str, dfd: int, name: str, attrs: Attrs, *, is_link: bool) -> None:
    if is_link and os.geteuid() == 0:
        os.chown(tmp, attrs.uid, attrs.gid, dir_fd=dfd, follow_symlinks=False)
        if attrs.mtime_ns is not None:
            os.utime(tmp, ns=(attrs.mtime_ns, attrs.mtime_ns), dir_fd=dfd,
                     follow_symlinks=False)
    os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    os.fsync(dfd)


def install(stack: Stack, layer: Layer, rel: PurePosixPath, *, attrs: Attrs,
            data: bytes | BinaryIO | None = None, symlink: str | None = None,
            whiteout: bool = False, expect: Fingerprint | None = None) -> None:
    """Atomically put a file (`data`), symbolic link or whiteout at `rel` in `layer`.

    Content, owner, mode, mtime and extended attributes are all set on the temp file before
    the rename. With `expect`, the entry there must still be the one fingerprinted (nobody
    changed it meanwhile), else `Conflict`.
    """
    dir_attrs = _dir_attrs_for(stack, layer, rel)
    with _open_parent(layer, rel, dir_attrs) as dfd:
        name = rel.name
        try:
            current = os.lstat(name, dir_fd=dfd)
        except FileNotFoundError:
            current = None
        if current is not None and stat.S_ISDIR(current.st_mode):
            raise ConfigError(f"{shown(rel)} is a directory in {layer.name}",
                              hint="a directory is not replaced by a file; remove it first")
        if expect is not None and Fingerprint.of(current) != expect:
            raise Conflict(f"{shown(rel)} changed in {layer.name} meanwhile",
                           hint="look at it again and retry")
        tmp = f".{name}.{secrets.token_hex(4)}.oneroot-tmp"
        try:
            if symlink is not None:
                os.symlink(symlink, tmp, dir_fd=dfd)
                _finish(tmp, dfd, name, attrs, is_link=True)
                return
            if whiteout:
                os.mknod(tmp, 0o600 | stat.S_IFCHR, WHITEOUT_DEVICE, dir_fd=dfd)
                _finish(tmp, dfd, name, attrs, is_link=True)
                return
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=dfd)
            with os.fdopen(fd, "wb") as f:
                if isinstance(data, bytes):
                    f.write(data)
                elif data is not None:
                    while chunk := data.read(_COPY_CHUNK):
                        f.write(chunk)
                f.flush()
                # chown before chmod (chown clears set-id bits), xattrs after chown (it drops
                # security.capability).
                if os.geteuid() == 0:
                    os.fchown(f.fileno(), attrs.uid, attrs.gid)
                os.fchmod(f.fileno(), attrs.mode)
                for key, value in attrs.xattrs.items():
                    os.setxattr(f.fileno(), key, value)
                if attrs.mtime_ns is not None:
                    os.utime(f.fileno(), ns=(attrs.mtime_ns, attrs.mtime_ns))
                os.fsync(f.fileno())
            _finish(tmp, dfd, name, attrs, is_link=False)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
            raise


def remove(layer: Layer, rel: PurePosixPath, *, recursive: bool = False,
           expect: Fingerprint | None = None) -> Entry | None:
    """Remove `rel` from `layer` (a directory only empty or with `recursive`); the entry
    removed, or None when there was none."""
    probe = _probe(layer, rel)
    if probe.state is not _State.FOUND or probe.entry is None:
        return None
    entry = probe.entry
    with open_tree(layer.base, layer.parts(rel)[:-1]) as dfd:
        st = os.lstat(rel.name, dir_fd=dfd)
        if expect is not None and Fingerprint.of(st) != expect:
            raise Conflict(f"{shown(rel)} changed in {layer.name} meanwhile",
                           hint="look at it again and retry")
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(rel.name, DIR_FLAGS, dir_fd=dfd)
            try:
                if os.listdir(sub) and not recursive:
                    raise UsageError(f"{shown(rel)} is a directory with files in it",
                                     hint="pass --recursive to drop all of them")
                for _ in walk(sub, same_dev=st.st_dev):
                    pass  # refuse a mount point before removing anything
                empty_dir(sub)
            finally:
                os.close(sub)
            os.rmdir(rel.name, dir_fd=dfd)
        else:
            os.unlink(rel.name, dir_fd=dfd)
        os.fsync(dfd)
    return entry


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """Identity of an entry at a moment: same inode, size and times means untouched."""

    value: tuple[int, ...] | None

    @classmethod
    def of(cls, st: os.stat_result | None) -> Fingerprint:
        if st is None:
            return cls(None)
        return cls((st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns))


def fingerprint(entry: Entry | None) -> Fingerprint:
    return Fingerprint.of(entry.st if entry else None)


def entry_attrs(entry: Entry, *, with_mtime: bool = True) -> Attrs:
    """Owner, mode, mtime and extended attributes (but overlayfs' own) of `entry`."""
    xattrs: dict[str, bytes] = {}
    if entry.type is EntryType.FILE:
        parts = entry.layer.parts(entry.rel)
        with open_tree(entry.layer.base, parts[:-1]) as dfd:
            fd = os.open(parts[-1], FILE_FLAGS, dir_fd=dfd)
            try:
                with contextlib.suppress(OSError):
                    for key in os.listxattr(fd):
                        if not key.startswith(_SKIP_XATTR_PREFIX):
                            with contextlib.suppress(OSError):
                                xattrs[key] = os.getxattr(fd, key)
            finally:
                os.close(fd)
    mode, uid, gid = entry.attrs
    return Attrs(mode=mode, uid=uid, gid=gid,
                 mtime_ns=entry.st.st_mtime_ns if with_mtime else None, xattrs=xattrs)


def copy_entry(stack: Stack, source: Entry, layer: Layer, *,
               expect: Fingerprint | None = None) -> None:
    """Copy `source` (a file, symbolic link or whiteout) to the same path in `layer`."""
    attrs = entry_attrs(source)
    rel = source.rel
    if source.type is EntryType.SYMLINK:
        assert source.target is not None
        install(stack, layer, rel, attrs=attrs, symlink=source.target, expect=expect)
    elif source.type is EntryType.WHITEOUT:
        install(stack, layer, rel, attrs=attrs, whiteout=True, expect=expect)
    elif source.type is EntryType.FILE:
        parts = source.layer.parts(rel)
        with open_tree(source.layer.base, parts[:-1]) as dfd:
            fd = os.open(parts[-1], FILE_FLAGS, dir_fd=dfd)
            with os.fdopen(fd, "rb") as f:
                if Fingerprint.of(os.fstat(f.fileno())) != fingerprint(source):
                    raise Conflict(f"{shown(rel)} changed in {source.layer.name} meanwhile",
                                   hint="retry")
                install(stack, layer, rel, attrs=attrs, data=f, expect=expect)
    else:
        raise UsageError(f"{shown(rel)} is a {source.type} in {source.layer.name}",
                         hint="files, symbolic links and masks can be copied; directories "
                              "and devices cannot")


def same_entry(a: Entry, b: Entry) -> bool:
    """Same type, owner, mode and content (or link text)."""
    if a.type is not b.type or a.attrs != b.attrs:
        return False
    if a.type is EntryType.SYMLINK:
        return a.target == b.target
    if a.type is EntryType.FILE:
        return a.st.st_size == b.st.st_size and _read_entry(a) == _read_entry(b)
    return a.type is EntryType.WHITEOUT


def read_file(entry: Entry) -> bytes:
    if entry.type is not EntryType.FILE:
        raise UsageError(f"{shown(entry.rel)} is a {entry.type} in {entry.layer.name}, "
                         "not a file")
    return _read_entry(entry)
