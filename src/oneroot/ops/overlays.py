"""`oneroot overlay …`: look at and edit a node's diff-overlay from the server, promote a
node's change to a group layer or the image, and archive a removed node's directory.

Each function builds the node's `Stack` from the inventory (image, group layers, its own
`upper/`) and calls `oneroot.overlay.stack`, `.changes` and `.edit`, which never follow a link
the node planted and write every file atomically. Anything that replaces or deletes a file the
user did not name (a reset, a promote over a different file, a removed node) is first saved as
a tarball under `<home>/archive/`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import io
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Concatenate, ParamSpec, TypeVar, cast

from oneroot.errors import ConfigError, Conflict, NotFound, UsageError
from oneroot.fsutil import empty_dir, open_dir, remove_tree
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster
from oneroot.nfs.viewpolicy import MaskKind, ViewPolicy, mask_of_path
from oneroot.ops.image_block import build_block
from oneroot.ops.inventory import get_group
from oneroot.ops.knfsd_subtree import MustReboot
from oneroot.ops.layerfs import release_layer_fs
from oneroot.ops.nfs_serving import union_released
from oneroot.ops.nodes_fs import group_layer, node_layer
from oneroot.ops.overlay_block import open_top_dir, opened_top, reading_top
from oneroot.ops.union_mounts import mounted_union, union_anywhere
from oneroot.ops.views import image_view
from oneroot.overlay.archive import TreeSource, write_tar
from oneroot.overlay.changes import Change, diff_change, list_changes, read_file, same_entry
from oneroot.overlay.edit import (
    Attrs,
    copy_entry,
    entry_attrs,
    fingerprint,
    install,
    remove,
    special_reason,
)
from oneroot.overlay.identity import IdentityStore
from oneroot.overlay.layer import ensure_layer
from oneroot.overlay.stack import (
    Entry,
    EntryType,
    Layer,
    Stack,
    layer_entry,
    lower_entry,
    node_path,
    shown,
    upper_entry,
)
from oneroot.rootspec import NfsLayer, parse

Editor = Callable[[Path], None]
_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True)
class OverlayResult:
    """What one edit did, said in a line: `changed` is False when nothing was written."""

    node: str
    path: str
    changed: bool
    message: str
    archive: Path | None = None
    # knfsd: running nodes whose export the remount around the edit turned subtree_check
    must_reboot: tuple[MustReboot, ...] = ()


def archive_dir(paths: Paths) -> Path:
    return paths.home / "archive"


def _stamp(now: datetime.datetime | None) -> str:
    return (now or datetime.datetime.now(datetime.UTC)).strftime("%Y%m%dT%H%M%SZ")


def _free_name(directory: Path, stem: str) -> Path:
    dest, n = directory / f"{stem}.tar.gz", 1
    while dest.exists():
        n += 1
        dest = directory / f"{stem}-{n}.tar.gz"
    return dest


# -- the stack -----------------------------------------------------------------------------

def node_stack(cluster: ResolvedCluster, paths: Paths, name: str) -> Stack:
    """The node's layers as it mounts them (`root=`), bottom first, and its own `upper/`.

    An image that is the server's live `/` is seen through the masks of its export view:
    `/etc/shadow` and the rest are absent here exactly as they are on the node.
    """
    r = cluster.node(name)
    s = cluster.settings
    image = r.image
    image_root = Path(image.root)
    spec = image_view(cluster, paths, image.name)
    lowers = [Layer(name=f"image {image.name}", base=image_root,
                    masked=None if spec is None else functools.partial(
                        view_masks_path, spec.lower, spec.policy))]
    if r.profile.block_union:  # its root is the image's EROFS and its ext4 top, served here
        base = open_top_dir(paths, name)
        return Stack(node=name, upper=Layer(name=f"node {name}", base=base, prefix=("upper",)),
                     lowers=tuple(lowers),
                     work=Layer(name=f"node {name} work", base=base, prefix=("work",)))
    server = str(s.server_address)
    for text in r.profile.extra_layers:
        for layer in parse(text).layers:
            if isinstance(layer, NfsLayer) and layer.server == server:
                lowers.append(Layer(name=f"layer {layer.path}", base=Path(layer.path)))
    for group in cluster.group_layers(r):
        lowers.append(Layer(name=f"group {group}", base=group_layer(cluster.dirs, group).root))
    dirs = node_layer(cluster.dirs, name)
    try:
        st = dirs.root.lstat()
    except FileNotFoundError:
        st = None
    if st is None or not stat.S_ISDIR(st.st_mode):
        raise NotFound(f"node {name} has no layer directory at {dirs.root}",
                       hint="`oneroot nfs apply` creates every node's layer")
    return Stack(node=name, upper=Layer(name=f"node {name}", base=dirs.root, prefix=("upper",)),
                 lowers=tuple(lowers),
                 work=Layer(name=f"node {name} work", base=dirs.root, prefix=("work",)))


def generated_files(paths: Paths, name: str) -> frozenset[PurePosixPath]:
    """The identity files oneroot writes into the node's layer (its manifest)."""
    return frozenset(IdentityStore(paths.identity_dir(name)).manifest())


def _writable(stack: Stack, paths: Paths | None = None) -> None:
    where = (union_anywhere(paths, stack.upper.root) if paths is not None
             else mounted_union(stack.upper.root))
    if where is not None:
        raise ConfigError(
            f"node {stack.node}'s layer is the upper dir of the overlay mounted at {where}",
            hint="changing a layer under a mounted overlayfs is undefined: unmount the "
                 "node's server-side union first")


@contextlib.contextmanager
def _released(cluster: ResolvedCluster, paths: Paths, name: str,
              must_reboot: list[MustReboot]) -> Iterator[None]:
    """The safe remount around an edit of a `union=server` node's layer: its union is
    unexported and unmounted during the edit, then mounted and exported again (the running
    nodes whose export that turned `subtree_check` are added to `must_reboot`). A
    `union=block` node's ext4 top is opened (in userspace) instead, if it is known off."""
    if cluster.node(name).profile.block_union:
        with opened_top(cluster, paths, name, write=True):
            yield
        return
    with union_released(cluster, paths, name, must_reboot=must_reboot.append):
        yield


def _telling(result: _T, must_reboot: list[MustReboot]) -> _T:
    """`result` with the nodes that should reboot, when it is an edit's result."""
    if must_reboot and isinstance(result, OverlayResult | ResetResult):
        return cast(_T, dataclasses.replace(result, must_reboot=tuple(must_reboot)))
    return result


def _through_remount(
        edit: Callable[Concatenate[ResolvedCluster, Paths, str, _P], _T],
) -> Callable[Concatenate[ResolvedCluster, Paths, str, _P], _T]:
    @functools.wraps(edit)
    def wrapper(cluster: ResolvedCluster, paths: Paths, name: str, /, *args: _P.args,
                **kwargs: _P.kwargs) -> _T:
        cluster.node(name)  # a missing node is reported as such, before anything else
        must_reboot: list[MustReboot] = []
        with _released(cluster, paths, name, must_reboot):
            result = edit(cluster, paths, name, *args, **kwargs)
        return _telling(result, must_reboot)
    return wrapper


# -- looking -------------------------------------------------------------------------------

def list_overlay(cluster: ResolvedCluster, paths: Paths, name: str,
                 path: str | None = None) -> list[Change]:
    with reading_top(cluster, paths, name):
        stack = node_stack(cluster, paths, name)
        under = node_path(path) if path not in (None, "", "/") else None
        return list_changes(stack, under, generated=generated_files(paths, name))


def diff_overlay(cluster: ResolvedCluster, paths: Paths, name: str,
                 path: str | None = None) -> list[tuple[Change, str]]:
    with reading_top(cluster, paths, name):
        stack = node_stack(cluster, paths, name)
        under = node_path(path) if path not in (None, "", "/") else None
        changes = list_changes(stack, under, generated=generated_files(paths, name))
        return [(c, diff_change(stack, c)) for c in changes]


# -- editing the node's layer --------------------------------------------------------------

def _edit_target(cluster: ResolvedCluster, paths: Paths, name: str,
                 path: str) -> tuple[PurePosixPath, Stack, Entry | None]:
    """The prologue of an edit: the node's `path`, its stack (refused while a server-side
    union is mounted over its layer) and what the node's own layer holds there."""
    rel = node_path(path)
    stack = node_stack(cluster, paths, name)
    _writable(stack, paths)
    return rel, stack, upper_entry(stack, rel)


def _lower_or_none(stack: Stack, rel: PurePosixPath) -> Entry | None:
    entry = lower_entry(stack, rel)
    if entry is not None and entry.type is EntryType.DIR:
        raise UsageError(f"{shown(rel)} is a directory in {entry.layer.name}",
                         hint="name a file in it")
    return entry


@_through_remount
def copy_from_lower(cluster: ResolvedCluster, paths: Paths, name: str, path: str, *,
                    force: bool = False) -> OverlayResult:
    """Start an override: the image's (or group layer's) file, with its owner, mode and mtime,
    copied into the node's layer."""
    rel = node_path(path)
    stack = node_stack(cluster, paths, name)
    _writable(stack, paths)
    lower = _lower_or_none(stack, rel)
    if lower is None:
        raise NotFound(f"no {shown(rel)} below node {name}'s layer (image or group layers)",
                       hint=f"`oneroot overlay put {name} {shown(rel)} FILE` adds a new file")
    current = upper_entry(stack, rel)
    if current is not None and current.type is not EntryType.WHITEOUT and not force:
        raise Conflict(f"node {name} already has its own {shown(rel)}",
                       hint=f"see `oneroot overlay diff {name} {shown(rel)}`; --force starts "
                            f"over from the {lower.layer.name} file")
    copy_entry(stack, lower, stack.upper, expect=fingerprint(current))
    return OverlayResult(node=name, path=shown(rel), changed=True,
                         message=f"copied {shown(rel)} from {lower.layer.name}")


def _start_attrs(current: Entry | None, lower: Entry | None, mode: int | None) -> Attrs:
    """Owner and mode for new content: the node's file, else the lower one, else root 0644."""
    base = current if current is not None and current.type is EntryType.FILE else lower
    attrs = entry_attrs(base, with_mtime=False) if base is not None and \
        base.type is EntryType.FILE else Attrs()
    if mode is not None:
        attrs = Attrs(mode=mode, uid=attrs.uid, gid=attrs.gid, xattrs=attrs.xattrs)
    return attrs


def _check_replaceable(name: str, rel: PurePosixPath, current: Entry | None) -> None:
    if current is not None and current.type not in (EntryType.FILE, EntryType.WHITEOUT):
        raise UsageError(f"{shown(rel)} is a {current.type} in node {name}'s layer",
                         hint=f"`oneroot overlay rm {name} {shown(rel)}` first")


def _refuse_special(what: str, kind: EntryType, attrs: Attrs, allow_special: bool) -> None:
    reason = special_reason(kind, attrs)
    if reason is not None and not allow_special:
        raise UsageError(f"{what} {reason}: not written",
                         hint="a node could use it to gain privileges; pass --allow-special "
                              "if that is what you want")


def _source_kind(source: BinaryIO) -> EntryType:
    try:
        mode = os.fstat(source.fileno()).st_mode
    except (OSError, ValueError, io.UnsupportedOperation):
        return EntryType.FILE  # an in-memory stream
    return EntryType.DEVICE if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else EntryType.FILE


@_through_remount
def put_file(cluster: ResolvedCluster, paths: Paths, name: str, path: str, source: BinaryIO, *,
             mode: int | None = None, allow_special: bool = False) -> OverlayResult:
    """Make `source`'s bytes the node's `path` (owner and mode kept from the file it
    replaces, or the image's; `mode` overrides). A device as the source, or a result that is
    setuid, setgid or has file capabilities is refused unless `allow_special`."""
    rel, stack, current = _edit_target(cluster, paths, name, path)
    _check_replaceable(name, rel, current)
    lower = _lower_or_none(stack, rel)
    attrs = _start_attrs(current, lower, mode)
    kind = _source_kind(source)
    _refuse_special("the source" if kind is EntryType.DEVICE else f"the new {shown(rel)}",
                    kind, attrs, allow_special)
    install(stack, stack.upper, rel, attrs=attrs, data=source, expect=fingerprint(current))
    return OverlayResult(node=name, path=shown(rel), changed=True, message=f"wrote {shown(rel)}")


def edit_file(cluster: ResolvedCluster, paths: Paths, name: str, path: str,
              editor: Editor, *, tmp_dir: Path | None = None) -> OverlayResult:
    """Run `editor` on a private temp copy (the node's file, else the image's, else empty);
    write it back atomically when it changed. If the node changed the file meanwhile, nothing
    is written and the edited copy is kept (its path is in the error)."""
    rel = node_path(path)
    stack = node_stack(cluster, paths, name)
    current = upper_entry(stack, rel)
    _check_replaceable(name, rel, current)
    lower = _lower_or_none(stack, rel)
    if current is not None and current.type is EntryType.FILE:
        before, origin = read_file(current), "the node's file"
    elif lower is not None and lower.type is EntryType.FILE:
        before, origin = read_file(lower), f"the {lower.layer.name} file"
    elif lower is not None:
        raise UsageError(f"{shown(rel)} is a {lower.type} in {lower.layer.name}",
                         hint=f"`oneroot overlay put {name} {shown(rel)} FILE` replaces it")
    else:
        before, origin = b"", "an empty file"
    work = Path(tempfile.mkdtemp(prefix=f"oneroot-edit-{name}-", dir=tmp_dir))  # 0700
    must_reboot: list[MustReboot] = []
    copy = work / rel.name
    copy.write_bytes(before)
    keep = False
    try:
        editor(copy)
        after = copy.read_bytes()
        if after == before and (current is not None and current.type is EntryType.FILE):
            return OverlayResult(node=name, path=shown(rel), changed=False,
                                 message=f"{shown(rel)} unchanged")
        if after == before and lower is not None:
            return OverlayResult(node=name, path=shown(rel), changed=False,
                                 message=f"{shown(rel)} unchanged: no override made")
        try:
            # The editor ran with the node's root still exported; only the write goes
            # through the safe remount of a server-side union.
            with _released(cluster, paths, name, must_reboot):
                _writable(stack, paths)
                install(stack, stack.upper, rel, attrs=_start_attrs(current, lower, None),
                        data=after, expect=fingerprint(current))
        except Conflict as exc:
            keep = True
            raise Conflict(f"{exc.message}: not written", hint=f"your edit is kept in {copy}; "
                           f"compare with `oneroot overlay diff {name} {shown(rel)}`") from None
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return OverlayResult(node=name, path=shown(rel), changed=True,
                         message=f"wrote {shown(rel)} (started from {origin})",
                         must_reboot=tuple(must_reboot))


@_through_remount
def remove_change(cluster: ResolvedCluster, paths: Paths, name: str, path: str, *,
                  recursive: bool = False) -> OverlayResult:
    """Drop the node's override, addition or mask: what is below shows again."""
    rel, stack, current = _edit_target(cluster, paths, name, path)
    if current is None:
        raise NotFound(f"node {name} has no change at {shown(rel)}",
                       hint=f"see `oneroot overlay ls {name}`")
    remove(stack.upper, rel, recursive=recursive, expect=fingerprint(current))
    below = lower_entry(stack, rel)
    now = f"the {below.layer.name} {below.type} shows again" if below else "nothing below"
    note = ""
    if rel in generated_files(paths, name):
        note = "; oneroot generated it: `oneroot nfs apply` writes it again"
    return OverlayResult(node=name, path=shown(rel), changed=True,
                         message=f"removed the node's {current.type} {shown(rel)}: {now}{note}")


@_through_remount
def mask_path(cluster: ResolvedCluster, paths: Paths, name: str, path: str, *,
              force: bool = False) -> OverlayResult:
    """Hide `path` from the node with a `c 0 0` whiteout."""
    rel, stack, current = _edit_target(cluster, paths, name, path)
    if current is not None and current.type is EntryType.WHITEOUT:
        return OverlayResult(node=name, path=shown(rel), changed=False,
                             message=f"{shown(rel)} is already masked")
    lower = lower_entry(stack, rel)
    if lower is None and not force:
        raise NotFound(f"nothing below node {name}'s layer has {shown(rel)} to mask",
                       hint="check the path; --force masks it anyway")
    if current is not None and current.type is EntryType.DIR:
        raise UsageError(f"{shown(rel)} is a directory in node {name}'s layer",
                         hint=f"`oneroot overlay rm --recursive {name} {shown(rel)}` first")
    if current is not None and not force:
        raise Conflict(f"node {name} has its own {shown(rel)}; masking would drop it",
                       hint=f"`oneroot overlay rm {name} {shown(rel)}` first, or --force")
    install(stack, stack.upper, rel, attrs=Attrs(mode=0o600), whiteout=True,
            expect=fingerprint(current))
    hides = f" (hides the {lower.layer.name} {lower.type})" if lower else ""
    return OverlayResult(node=name, path=shown(rel), changed=True,
                         message=f"masked {shown(rel)}{hides}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ResetResult:
    node: str
    removed: int
    kept: tuple[PurePosixPath, ...]
    archive: Path | None
    must_reboot: tuple[MustReboot, ...] = ()  # as OverlayResult's


@_through_remount
def reset_layer(cluster: ResolvedCluster, paths: Paths, name: str, *, archive: bool = True,
                now: datetime.datetime | None = None) -> ResetResult:
    """Empty the node's `upper/` in place but for its generated identity files, and empty
    `work/` below its top-level directories. With `archive`, `upper/` is saved first.

    Never removed and recreated: the node's directory is exported, and a new directory would
    give the node stale NFS file handles.
    """
    stack = node_stack(cluster, paths, name)
    _writable(stack, paths)
    root = stack.upper.base
    dest = None
    if archive:
        dest = write_tar(_free_name(archive_dir(paths), f"{name}-reset-{_stamp(now)}"),
                         [TreeSource(base=root, parts=("upper",), arcname=f"{name}/upper")])
    manifest = generated_files(paths, name)
    with open_dir(root, ("upper",)) as fd:
        removed = empty_dir(fd, frozenset(p.parts for p in manifest))
    work_dir = stack.work.root if stack.work is not None else None
    if work_dir is None or not _is_dir(work_dir):
        kept = tuple(sorted(p for p in manifest if upper_entry(stack, p) is not None))
        return ResetResult(node=name, removed=len(removed), kept=kept, archive=dest)
    with open_dir(root, ("work",)) as wfd:
        # The union keeps its own directories here (overlayfs `work/work`, `index/`): they
        # stay; only what is in them goes.
        for entry in sorted(os.listdir(wfd)):
            try:
                st = os.lstat(entry, dir_fd=wfd)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                with open_dir(root, ("work", entry)) as sub:
                    removed += empty_dir(sub)
            else:
                remove(stack.work or stack.upper, PurePosixPath(entry))
    kept = tuple(sorted(p for p in manifest if upper_entry(stack, p) is not None))
    return ResetResult(node=name, removed=len(removed), kept=kept, archive=dest)


# -- promote -------------------------------------------------------------------------------

def _target_layer(cluster: ResolvedCluster, name: str, to: str) -> Layer:
    r = cluster.node(name)
    node = r.node
    if to == "image":
        image = r.image
        if image.root == PurePosixPath("/"):
            raise ConfigError(
                f"image {image.name} is the server's live `/`: promoting would change the "
                "server's own root under every node (and the server itself)",
                hint="make the change on the server as usual, or promote to a group layer")
        return Layer(name=f"image {image.name}", base=Path(image.root))
    if r.profile.block_union:
        raise UsageError(f"node {name} is union=block: it mounts no group layer",
                         hint="promote it --to image (its EROFS file is rebuilt)")
    group = get_group(cluster.inventory, to)
    if to not in node.groups:
        raise UsageError(f"node {name} is not in group {to}: the change would leave the node",
                         hint=f"promote to one of its groups: {', '.join(node.groups) or '-'}")
    if group.values.get("group_layer") is not True:
        raise ConfigError(f"group {to} has no layer of its own",
                          hint=f"`oneroot group set {to} --set group_layer=true`, then "
                               "`oneroot nfs apply` and reboot its nodes")
    dirs = group_layer(cluster.dirs, to)
    ensure_layer(dirs)
    return Layer(name=f"group {to}", base=dirs.root)


@_through_remount
def promote_change(cluster: ResolvedCluster, paths: Paths, name: str, path: str, *, to: str,
                   overwrite: bool = False, allow_special: bool = False,
                   now: datetime.datetime | None = None) -> OverlayResult:
    """Move the node's change at `path` into group layer `to` (or `image`), then drop it from
    the node's layer. A whiteout becomes a whiteout in the group layer (the group's nodes no
    longer see the image's file) or, in the image, the deletion of the file. A different file
    already there is refused unless `overwrite`, and is archived first."""
    rel, stack, current = _edit_target(cluster, paths, name, path)
    if current is None:
        raise NotFound(f"node {name} has no change at {shown(rel)}",
                       hint=f"see `oneroot overlay ls {name}`")
    if current.type not in (EntryType.FILE, EntryType.SYMLINK, EntryType.WHITEOUT):
        raise UsageError(f"{shown(rel)} is a {current.type} in node {name}'s layer",
                         hint="promote files, links and masks one at a time")
    _refuse_special(f"node {name}'s {shown(rel)}", current.type, entry_attrs(current),
                    allow_special)
    target = _target_layer(cluster, name, to)
    existing = layer_entry(target, rel)
    deletes = current.type is EntryType.WHITEOUT and to == "image"
    if deletes and existing is None:
        raise NotFound(f"{target.name} has no {shown(rel)} to delete",
                       hint="the mask hides a group layer's file: promote it to that group")
    if existing is not None and existing.type is EntryType.DIR:
        raise UsageError(f"{shown(rel)} is a directory in {target.name}",
                         hint="a directory is not replaced by a promote")
    same = existing is not None and not deletes and same_entry(existing, current)
    saved = None
    if existing is not None and not same:
        if not overwrite:
            raise Conflict(f"{target.name} already has a different {shown(rel)}",
                           hint="compare them; --overwrite replaces it (the old one is "
                                "archived)")
        saved = write_tar(
            _free_name(archive_dir(paths), f"promote-{name}-{_stamp(now)}"),
            [TreeSource(base=target.base, parts=target.parts(rel),
                        arcname=f"{target.name.replace(' ', '-')}/{rel}")])
    if deletes:
        remove(target, rel, expect=fingerprint(existing))
    elif not same:
        copy_entry(stack, current, target, expect=fingerprint(existing))
    note = ""
    try:
        remove(stack.upper, rel, expect=fingerprint(current))
    except Conflict:
        note = "; the node changed its copy meanwhile, so the node keeps it"
    seen = lower_entry(stack, rel)
    if not deletes and (seen is None or seen.layer != target):
        above = seen.layer.name if seen is not None else "a mask above it"
        note += f"; note: node {name} sees {above}, not {target.name}"
    if to == "image" and cluster.node(name).profile.block_union:
        build_block(cluster.settings, cluster.node(name).image)  # what block nodes mount
    verb = "deleted" if deletes else "moved"
    where = f"from {target.name}" if deletes else f"to {target.name}"
    return OverlayResult(node=name, path=shown(rel), changed=True, archive=saved,
                         message=f"{verb} {shown(rel)} {where}{note}")


# -- node removal --------------------------------------------------------------------------

def archive_node_dir(cluster: ResolvedCluster, paths: Paths, name: str, *,
                     now: datetime.datetime | None = None) -> Path | None:
    """Save `<state_dir>/<name>` and the node's identity dir into
    `<home>/archive/<name>-<UTC time>.tar.gz`, then remove both. None when neither exists.

    Call it once the node's export is gone (the node must not write any more). Refuses while a
    server-side union uses the layer or anything is mounted inside it. The tarball keeps
    owners, modes, whiteouts, links and xattrs: `tar --xattrs --xattrs-include='*' -xpzf`.
    The node does not need to be in the inventory any more.
    """
    layer = node_layer(cluster.dirs, name)
    ident = paths.identity_dir(name)
    sources = []
    if _is_dir(layer.root):
        where = union_anywhere(paths, layer.upper)
        if where is not None:
            raise ConfigError(f"node {name}'s layer is still the upper dir of the overlay "
                              f"mounted at {where}", hint="unmount it first")
        sources.append(TreeSource(base=layer.root.parent, parts=(layer.root.name,),
                                  arcname=f"{name}/layer"))
    if _is_dir(ident):
        sources.append(TreeSource(base=ident.parent, parts=(ident.name,),
                                  arcname=f"{name}/identity"))
    if not sources:
        return None
    dest = write_tar(_free_name(archive_dir(paths), f"{name}-{_stamp(now)}"), sources)
    release_layer_fs(layer.root)  # a layer of its own (layer_fs=own): unmount, drop the image
    for src in sources:
        remove_tree(src.base, src.parts)
    return dest


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except FileNotFoundError:
        return False


def view_masks_path(lower: Path, policy: ViewPolicy, rel: PurePosixPath) -> bool:
    """Whether the masked view of `lower` hides `rel` (an emptied directory itself shows)."""
    mask = mask_of_path(lower, policy, rel)
    return mask is not None and (mask.path != rel or mask.kind is MaskKind.HIDDEN)
