"""What a node changed in its own layer, compared with the layers below it, and the diffs
`oneroot overlay ls/diff` print. Files are read with size bounds, never through a link.
"""

from __future__ import annotations

import contextlib
import difflib
import enum
import hashlib
import itertools
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from oneroot.errors import UsageError
from oneroot.fsutil import (
    DIR_FLAGS,
    FILE_FLAGS,
    UnsafePath,
    fd_opaque,
    open_dir,
    read_bounded,
    walk,
)
from oneroot.fsutil.nofollow import kind
from oneroot.overlay.stack import Entry, EntryType, Stack, lower_entry, shown, upper_entry

TEXT_DIFF_LIMIT = 4 << 20  # bytes; larger files get the binary summary
READ_LIMIT = 64 << 20  # bytes a file of a layer may have to be read whole (edit, diff)
HASH_LIMIT = 1 << 30  # bytes hashed for a binary summary
COMPARE_LIMIT = 1 << 40  # promote compares files this large at most (equal sizes, streamed)
_CHUNK = 1 << 20


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
    with open_dir(stack.upper.base, stack.upper.parts(PurePosixPath(*start))) as fd:
        for parts, st, pfd in walk(fd, start):
            rel = PurePosixPath(*parts)
            target = os.readlink(parts[-1], dir_fd=pfd) if stat.S_ISLNK(st.st_mode) else None
            opaque = False
            if stat.S_ISDIR(st.st_mode):
                with contextlib.suppress(OSError):
                    dfd = os.open(parts[-1], DIR_FLAGS, dir_fd=pfd)
                    try:
                        opaque = fd_opaque(dfd)
                    finally:
                        os.close(dfd)
            entry = Entry(layer=stack.upper, rel=rel, st=st, target=target, opaque=opaque)
            change = classify(stack, entry, generated=rel in generated)
            if change is not None:
                out.append(change)
    return out


@contextlib.contextmanager
def _opened(entry: Entry) -> Iterator[tuple[int, os.stat_result]]:
    """A regular file of a layer, opened without following links or blocking (its fd and
    fstat); anything else is refused, naming it."""
    layer, parts = entry.layer, entry.layer.parts(entry.rel)
    with open_dir(layer.base, parts[:-1]) as dfd:
        fd = os.open(parts[-1], FILE_FLAGS, dir_fd=dfd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePath(f"{shown(entry.rel)} in {layer.name} is a {kind(st)}, not a "
                                 "regular file")
            yield fd, st
        finally:
            os.close(fd)


def _read_entry(entry: Entry, limit: int = READ_LIMIT) -> bytes:
    """A regular file's bytes (at most `limit`: larger is refused, naming the file)."""
    layer, parts = entry.layer, entry.layer.parts(entry.rel)
    with open_dir(layer.base, parts[:-1]) as dfd:
        return read_bounded(dfd, parts[-1], limit=limit,
                            shown=f"{shown(entry.rel)} in {layer.name}").data


def _chunks(entry: Entry, limit: int) -> Iterator[bytes]:
    with _opened(entry) as (fd, _st):
        left = limit
        while left > 0 and (chunk := os.read(fd, min(left, _CHUNK))):
            left -= len(chunk)
            yield chunk


def _is_text(data: bytes) -> bool:
    if b"\0" in data[:8192]:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _summary(entry: Entry) -> str:
    size = entry.st.st_size
    if size > HASH_LIMIT:
        return f"{size} bytes (not hashed: over {HASH_LIMIT} bytes)"
    digest = hashlib.sha256()
    for chunk in _chunks(entry, HASH_LIMIT):
        digest.update(chunk)
    return f"{size} bytes, sha256 {digest.hexdigest()}"


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



def same_entry(a: Entry, b: Entry) -> bool:
    """Same type, owner, mode and content (or link text)."""
    if a.type is not b.type or a.attrs != b.attrs:
        return False
    if a.type is EntryType.SYMLINK:
        return a.target == b.target
    if a.type is EntryType.FILE:
        if a.st.st_size != b.st.st_size:
            return False
        left, right = _chunks(a, COMPARE_LIMIT), _chunks(b, COMPARE_LIMIT)
        return all(x == y for x, y in itertools.zip_longest(left, right))
    return a.type is EntryType.WHITEOUT


def read_file(entry: Entry) -> bytes:
    if entry.type is not EntryType.FILE:
        raise UsageError(f"{shown(entry.rel)} is a {entry.type} in {entry.layer.name}, "
                         "not a file")
    return _read_entry(entry)
