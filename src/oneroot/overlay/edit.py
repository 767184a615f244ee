"""Edits of a layer made from the server: install a file, link or whiteout atomically, remove
an entry, copy one between layers. Nothing is written through a link a node planted.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import BinaryIO

from oneroot.errors import ConfigError, Conflict, UsageError
from oneroot.fsutil import (
    DIR_FLAGS,
    FILE_FLAGS,
    WHITEOUT_DEVICE,
    DirAttrs,
    atomic_file,
    lstat_at,
    open_dir,
    open_dir_fd,
    replace_entry,
)
from oneroot.fsutil.nofollow import remove_at
from oneroot.overlay.stack import (
    Entry,
    EntryType,
    Layer,
    ProbeState,
    Stack,
    lower_entry,
    probe_layer,
    shown,
    upper_entry,
)

_COPY_CHUNK = 1 << 20
_SKIP_XATTR_PREFIX = "trusted.overlay."
CAPABILITY_XATTR = "security.capability"


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


def _link_attrs(tmp: str, dfd: int, attrs: Attrs) -> None:
    if os.geteuid() == 0:
        os.chown(tmp, attrs.uid, attrs.gid, dir_fd=dfd, follow_symlinks=False)
        if attrs.mtime_ns is not None:
            os.utime(tmp, ns=(attrs.mtime_ns, attrs.mtime_ns), dir_fd=dfd,
                     follow_symlinks=False)


def _write_data(f: BinaryIO, data: bytes | BinaryIO | None, attrs: Attrs) -> None:
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


def install(stack: Stack, layer: Layer, rel: PurePosixPath, *, attrs: Attrs,
            data: bytes | BinaryIO | None = None, symlink: str | None = None,
            whiteout: bool = False, expect: Fingerprint | None = None) -> None:
    """Atomically put a file (`data`), symbolic link or whiteout at `rel` in `layer`.

    Content, owner, mode, mtime and extended attributes are all set on the temp file before
    the rename. With `expect`, the entry there must still be the one fingerprinted (nobody
    changed it meanwhile), else `Conflict`. Missing parent directories are made with the
    owner and mode the node sees below; a link or file standing where one is needed is
    refused.
    """
    dir_attrs = {k: DirAttrs(mode=m, uid=u, gid=g)
                 for k, (m, u, g) in _dir_attrs_for(stack, layer, rel).items()}
    with open_dir(layer.base) as top:
        dfd = open_dir_fd(top, layer.parts(rel)[:-1], create=True, attrs_for=dir_attrs,
                          shown=f"{layer.name}:")
    try:
        name = rel.name
        current = lstat_at(dfd, name)
        if current is not None and stat.S_ISDIR(current.st_mode):
            raise ConfigError(f"{shown(rel)} is a directory in {layer.name}",
                              hint="a directory is not replaced by a file; remove it first")
        if expect is not None and Fingerprint.of(current) != expect:
            raise Conflict(f"{shown(rel)} changed in {layer.name} meanwhile",
                           hint="look at it again and retry")
        if symlink is not None:
            def make_link(tmp: str) -> None:
                os.symlink(symlink, tmp, dir_fd=dfd)
                _link_attrs(tmp, dfd, attrs)
            replace_entry(dfd, name, make_link)
        elif whiteout:
            def make_whiteout(tmp: str) -> None:
                os.mknod(tmp, 0o600 | stat.S_IFCHR, WHITEOUT_DEVICE, dir_fd=dfd)
                _link_attrs(tmp, dfd, attrs)
            replace_entry(dfd, name, make_whiteout)
        else:
            with atomic_file(dfd, name) as f:
                _write_data(f, data, attrs)
    finally:
        os.close(dfd)


def remove(layer: Layer, rel: PurePosixPath, *, recursive: bool = False,
           expect: Fingerprint | None = None) -> Entry | None:
    """Remove `rel` from `layer` (a directory only empty or with `recursive`); the entry
    removed, or None when there was none."""
    found = probe_layer(layer, rel)
    if found.state is not ProbeState.FOUND or found.entry is None:
        return None
    entry = found.entry
    with open_dir(layer.base, layer.parts(rel)[:-1]) as dfd:
        st = os.lstat(rel.name, dir_fd=dfd)
        if expect is not None and Fingerprint.of(st) != expect:
            raise Conflict(f"{shown(rel)} changed in {layer.name} meanwhile",
                           hint="look at it again and retry")
        if stat.S_ISDIR(st.st_mode) and not recursive:
            sub = os.open(rel.name, DIR_FLAGS, dir_fd=dfd)
            try:
                if os.listdir(sub):
                    raise UsageError(f"{shown(rel)} is a directory with files in it",
                                     hint="pass --recursive to drop all of them")
            finally:
                os.close(sub)
        remove_at(dfd, rel.name)
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
        with open_dir(entry.layer.base, parts[:-1]) as dfd:
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
        with open_dir(source.layer.base, parts[:-1]) as dfd:
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


def special_reason(kind: EntryType, attrs: Attrs) -> str | None:
    """Why an entry must not be written without the administrator saying so
    (`--allow-special`): it is a device, setuid or setgid, or carries file capabilities.
    None: an ordinary entry."""
    if kind is EntryType.DEVICE:
        return "is a device"
    if kind is not EntryType.FILE:
        return None
    if attrs.mode & stat.S_ISUID:
        return "is setuid"
    if attrs.mode & stat.S_ISGID:
        return "is setgid"
    if CAPABILITY_XATTR in attrs.xattrs:
        return "has file capabilities (security.capability)"
    return None
