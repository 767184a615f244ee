"""The masked, read-only view of an image root that is the server's live `/` (DESIGN §6).

Exporting `/` would hand every node the server's `/etc/shadow`, its SSH host keys and every
node's directory; masking them inside a node's union protects nothing (root on a node can mount
the export itself). So the export is an overlayfs view:

    tmpfs at  <views>/.<image>.upper           (root-only; lives as long as the view)
    overlay   lowerdir=/, upperdir=<tmpfs>/upper, workdir=<tmpfs>/work,
              index=on, nfs_export=on, xino=on, ro     mounted at <views>/<image>

The upper holds, built before the mount:
- `c 0 0` whiteouts for secret files (`etc/shadow`, its `-` backup, the SSH host private keys…);
- *emptied* directories (opaque, nothing from below shows): `/root`, `/var/backups` (Debian
  keeps `shadow.bak` there), the state dir, the group dir, oneroot's home; o+rx, as every
  directory on the way to a junction, since the view is exported `all_squash`;
- inside the state and group dirs, one empty directory per node and group: the mount points
  (ganesha "junctions") where each node's own export attaches at its real path.

Why each option: without an upper the view's root handle is stale (the export fails); without
`xino=on` ganesha answers NFS4ERR_XDEV (overlayfs reports the lower st_dev for non-directories);
`index=on,nfs_export=on` make file handles decodable; after the mount and each update, the
index gets a whiteout per masked file so a forged handle of one is stale (`viewhandles`).
New files under the live `/` show through at once. The view is mounted `ro`; adding a
junction remounts it rw for the `mkdir` (which lands in the tmpfs) and back, in place —
never unmounted while exported (stale handles).

If the server's `/` is itself an overlayfs (a container), the kernel refuses the view:
`ViewUnsupported` says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from oneroot.errors import ConfigError, ExternalToolError
from oneroot.fsutil import make_whiteout, set_opaque
from oneroot.nfs.viewhandles import block_masked_handles
from oneroot.nfs.viewpolicy import Mask, MaskKind, ViewPolicy, plan_masks, swap_files_under

log = logging.getLogger(__name__)

VIEW_OPTIONS = "index=on,nfs_export=on,xino=on"
TMPFS_SIZE = "32m"
# Emptying a directory through a mounted view leaves one whiteout per entry in the tmpfs:
# past this many, the view is left as it is and `image show` / doctor say to remount it.
LIVE_EMPTY_LIMIT = 5000
OTHERS_RX = stat.S_IROTH | stat.S_IXOTH


class ViewUnsupported(ConfigError):
    """The kernel cannot build an exportable overlay view of this lower directory."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ViewSpec:
    """Where one view lives and what decides its masks (`viewpolicy`). Paths in `junctions`
    and in the policy are relative to `lower`. The masks themselves are computed when the
    view is built or refreshed (`masks_of`): the live root changes under it."""

    name: str
    lower: Path
    mountpoint: Path
    upper_mount: Path
    policy: ViewPolicy
    junctions: tuple[PurePosixPath, ...]

    def check(self) -> None:
        for path in (self.lower, self.mountpoint, self.upper_mount):
            if not path.is_absolute() or any(c in str(path) for c in ",:\\\n"):
                raise ConfigError(f"view path {path} must be absolute, without , : or \\")
        owned = [rel for rel, _ in self.policy.owned]
        for rel in (*owned, *self.policy.expose, *self.junctions):
            if rel.is_absolute() or ".." in rel.parts or not rel.parts:
                raise ConfigError(f"view path {rel} must be a relative path inside the view")
        for junction in self.junctions:
            if not any(junction == o or _is_below(junction, o) for o in owned):
                raise ConfigError(
                    f"junction {junction} is not inside an emptied directory",
                    hint="what is under it in the real root would show through the view")


@dataclass(frozen=True, slots=True, kw_only=True)
class ViewStatus:
    spec: ViewSpec
    mounted: bool
    created: bool = False
    junctions_added: tuple[PurePosixPath, ...] = ()
    masks_added: tuple[Mask, ...] = ()
    deferred: tuple[Mask, ...] = ()  # too big to empty live: remount the view
    handles_blocked: int = 0  # index whiteouts added (`viewhandles`)


@dataclass(frozen=True, slots=True, kw_only=True)
class MountEntry:
    mount_point: Path
    fstype: str
    source: str
    options: str
    # The directory of its filesystem mounted there (`/` but for a bind of a subdirectory
    # or a btrfs subvolume): what a forged handle through an export at `mount_point` reaches.
    root: str = "/"


def _is_below(path: PurePosixPath, parent: PurePosixPath) -> bool:
    return path != parent and path.parts[: len(parent.parts)] == parent.parts


def _relative_to(path: PurePosixPath, lower: Path) -> PurePosixPath | None:
    try:
        rel = PurePosixPath(path).relative_to(PurePosixPath(lower))
    except ValueError:
        return None
    return rel if rel.parts else None


def view_spec(name: str, *, lower: Path, views_dir: Path, state_dir: PurePosixPath,
              group_dir: PurePosixPath, nodes: Iterable[str] = (), groups: Iterable[str] = (),
              hidden_dirs: Iterable[PurePosixPath] = (),
              expose: Iterable[PurePosixPath] = (),
              exports: Iterable[PurePosixPath] = ()) -> ViewSpec:
    """The view of `lower` for image `name`: the allowlist of `viewpolicy`, the state and
    group dirs emptied but for one junction per node / group, `hidden_dirs` (oneroot's home)
    emptied, a junction per other export inside `lower` (`exports`: the images exported as
    they are, `HOME/images/NAME`, their versions, the block dir, `/srv/images/NAME`), each
    emptied itself unless an emptied dir holds it, `expose` (absolute, or relative to
    `lower`) added to what nodes see.

    Why the export junctions: nfs-ganesha builds each export's NFSv4 pseudo path by looking
    it up from the export above it; an export below an emptied directory of the view made it
    refuse to start ("LOOKUP images failed ... can't create directory on non-PSEUDO FSAL").
    knfsd binds the export at its junction (`ops.knfsd_layout`): the view is its NFSv4 root,
    so the junction is the only way a node's `server:/srv/images/NAME` reaches the export.
    Emptied, the junction shows nothing of the tree below it but through that bind, which is
    exported to the export's own clients (a version to its nodes alone)."""
    owned: dict[PurePosixPath, str] = {}
    junctions: set[PurePosixPath] = set()
    for base, names, what in ((state_dir, nodes, "oneroot state dir"),
                              (group_dir, groups, "oneroot group dir")):
        rel = _relative_to(PurePosixPath(base), lower)
        if rel is None:
            continue
        owned.setdefault(rel, what)
        junctions.update(rel / n for n in names)
    hidden = [rel for h in hidden_dirs if (rel := _relative_to(PurePosixPath(h), lower))]
    for rel in hidden:
        owned.setdefault(rel, "oneroot home")
    trees = list(owned)
    inside = {rel for e in exports if (rel := _relative_to(PurePosixPath(e), lower))}
    for rel in sorted(inside):  # an export before those inside it
        if any(rel == t or _is_below(t, rel) for t in trees):
            continue  # an export holding oneroot's own trees is never one junction
        junctions.add(rel)
        if not any(_is_below(rel, o) for o in owned):
            owned[rel] = "an export, shown at its junction only"
    exposed = []
    for path in expose:
        rel = _relative_to(path, lower) if path.is_absolute() else path
        if rel is not None:
            exposed.append(rel)
    policy = ViewPolicy(owned=tuple(sorted(owned.items())), expose=tuple(sorted(exposed)),
                        swap_files=swap_files_under(lower))
    spec = ViewSpec(name=name, lower=lower, mountpoint=views_dir / name,
                    upper_mount=views_dir / f".{name}.upper", policy=policy,
                    junctions=tuple(sorted(junctions)))
    spec.check()
    return spec


def masks_of(spec: ViewSpec) -> list[Mask]:
    """What the view hides now, with the reason for each (walks the lower's system dirs)."""
    return plan_masks(spec.lower, spec.policy)


# -- mounts ------------------------------------------------------------------------------------


def _unescape(field: str) -> str:
    out, i = [], 0
    while i < len(field):
        octal = field[i + 1:i + 4]
        if field[i] == "\\" and len(octal) == 3 and all(c in "01234567" for c in octal):
            out.append(chr(int(octal, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def read_mounts(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[MountEntry]:
    entries = []
    for line in mountinfo.read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 2:
            continue
        entries.append(MountEntry(mount_point=Path(_unescape(fields[4])), fstype=rest[0],
                                  source=_unescape(rest[1]), root=_unescape(fields[3]),
                                  options=rest[2] if len(rest) > 2 else ""))
    return entries


def mount_at(path: Path, mounts: list[MountEntry] | None = None) -> MountEntry | None:
    """The topmost mount whose mount point is exactly `path`."""
    found = [m for m in (mounts if mounts is not None else read_mounts())
             if m.mount_point == path]
    return found[-1] if found else None


def is_filesystem_root(path: Path, mounts: list[MountEntry] | None = None) -> bool:
    """Whether `path` is where a whole filesystem is mounted (the topmost mount there has
    its filesystem's root, not a bind of a subdirectory of it): an export there holds all
    that a file handle of that filesystem can name."""
    entry = mount_at(Path(os.path.realpath(path)), mounts)
    return entry is not None and entry.root == "/"


def filesystem_of(path: Path, mounts: list[MountEntry] | None = None) -> MountEntry | None:
    """The mount that holds `path` (longest mount point prefix, last mounted wins)."""
    best: MountEntry | None = None
    target = PurePosixPath(os.path.realpath(path))
    for m in mounts if mounts is not None else read_mounts():
        mp = PurePosixPath(m.mount_point)
        if (target == mp or _is_below(target, mp)) and (
                best is None or len(mp.parts) >= len(PurePosixPath(best.mount_point).parts)):
            best = m
    return best


def _run(*argv: str) -> None:
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        raise ExternalToolError(f"{' '.join(argv)} failed: {proc.stderr.strip()}",
                                hint="see `dmesg | tail` for the kernel's reason")


# -- building ----------------------------------------------------------------------------------


def _copy_attrs_dir(lower: Path, rel: PurePosixPath, target: Path, default_mode: int) -> None:
    try:
        st = os.lstat(lower / rel) if rel.parts else os.lstat(lower)
        if stat.S_ISDIR(st.st_mode):
            os.chown(target, st.st_uid, st.st_gid)
            os.chmod(target, stat.S_IMODE(st.st_mode))
            return
    except FileNotFoundError:
        pass
    os.chown(target, 0, 0)
    os.chmod(target, default_mode)


def _make_dirs(upper: Path, lower: Path, rel: PurePosixPath) -> Path:
    """Create `upper/rel` and its parents, each looking like its counterpart in `lower`."""
    current = upper
    for i, part in enumerate(rel.parts):
        current = current / part
        if not current.is_dir():
            current.mkdir()
            _copy_attrs_dir(lower, PurePosixPath(*rel.parts[: i + 1]), current, 0o755)
    return current


def _others_may_enter(path: Path) -> None:
    """o+rx: the view is exported `all_squash`, so every node reads it as nobody. An emptied
    dir (`/root` 0700) must list as empty, not EACCES (a node's union reads it), and the way
    to a junction (the state dir, 0700) must be walkable; neither shows anything else."""
    os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | OTHERS_RX)


def build_upper(spec: ViewSpec, upper: Path, masks: Iterable[Mask]) -> None:
    """Lay out the view's upper dir (before the mount): emptied dirs, junctions, whiteouts."""
    _copy_attrs_dir(spec.lower, PurePosixPath(), upper, 0o755)
    masks = list(masks)
    for mask in masks:
        if mask.kind is MaskKind.EMPTIED:
            emptied = _make_dirs(upper, spec.lower, mask.path)
            set_opaque(emptied)
            _others_may_enter(emptied)
    for rel in spec.junctions:
        junction = _make_dirs(upper, spec.lower, rel)
        os.chmod(junction, 0o755)
        for step in rel.parents:
            _others_may_enter(upper / step)
    for mask in masks:
        if mask.kind is MaskKind.HIDDEN:
            rel = mask.path
            parent = _make_dirs(upper, spec.lower, rel.parent) if rel.parent.parts else upper
            make_whiteout(parent / rel.name)


def mount_view(spec: ViewSpec) -> ViewStatus:
    """Mount the view, or bring a mounted one up to date in place. Idempotent."""
    spec.check()
    mounts = read_mounts()
    if mount_at(spec.mountpoint, mounts) is not None:
        return update_view(spec)
    lower_fs = filesystem_of(spec.lower, mounts)
    spec.mountpoint.mkdir(parents=True, exist_ok=True)
    spec.upper_mount.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(spec.upper_mount, 0o700)
    if mount_at(spec.upper_mount, mounts) is None:
        _run("mount", "-t", "tmpfs", "-o", f"mode=0700,size={TMPFS_SIZE}",
             f"oneroot-view-{spec.name}", str(spec.upper_mount))
    upper, work = spec.upper_mount / "upper", spec.upper_mount / "work"
    masks = masks_of(spec)
    try:
        for d in (upper, work):
            d.mkdir(exist_ok=True)
        build_upper(spec, upper, masks)
        options = (f"ro,lowerdir={spec.lower},upperdir={upper},workdir={work},{VIEW_OPTIONS}")
        try:
            _run("mount", "-t", "overlay", "-o", options, f"oneroot-view-{spec.name}",
                 str(spec.mountpoint))
        except ExternalToolError as exc:
            if lower_fs is not None and lower_fs.fstype == "overlay":
                raise ViewUnsupported(
                    f"cannot export a masked view of {spec.lower}: it is itself on an overlayfs "
                    f"({lower_fs.mount_point}), and overlay-on-overlay with nfs_export=on is "
                    f"refused by the kernel ({exc.message})",
                    hint="use an image directory (`oneroot image create NAME`) instead of `/`",
                ) from None
            raise
    except BaseException:
        with contextlib.suppress(ExternalToolError):
            _run("umount", str(spec.upper_mount))
        raise
    blocked = _block_handles(spec, masks)
    log.info("nfs.view.mounted image=%s at=%s masks=%d junctions=%d", spec.name,
             spec.mountpoint, len(masks), len(spec.junctions))
    return ViewStatus(spec=spec, mounted=True, created=True, junctions_added=spec.junctions,
                      masks_added=tuple(masks), handles_blocked=blocked)


def _block_handles(spec: ViewSpec, masks: list[Mask]) -> int:
    """Forged handles of what `masks` hide answer ESTALE (`viewhandles`). After the mount
    (overlayfs makes the index dir) and after live masks (their unlink copies up through the
    index, which a whiteout there would refuse)."""
    return block_masked_handles(spec.lower, spec.upper_mount / "upper",
                                spec.upper_mount / "work" / "index", [m.path for m in masks],
                                cache=spec.upper_mount / "handles-walked.json")


@contextlib.contextmanager
def _writable(mountpoint: Path) -> Iterator[None]:
    _run("mount", "-o", "remount,rw", str(mountpoint))
    try:
        yield
    finally:
        _run("mount", "-o", "remount,ro", str(mountpoint))


def _leftovers(spec: ViewSpec, rel: PurePosixPath) -> Iterator[Path]:
    """What the mounted view shows below its directory `rel` that is neither a junction nor a
    directory on the way to one (those are walked: a junction may be deep inside an emptied
    dir, `srv/images/NAME`). A junction itself is never entered: it may hold a bind of the
    real tree (`nfs.knfsd`), and removing through it would remove the real files."""
    for entry in os.scandir(spec.mountpoint / rel):
        child = rel / entry.name
        if child in spec.junctions or os.path.ismount(entry.path):
            continue  # a junction, or a bind at one of an export gone since (`stray_binds`)
        if entry.is_dir(follow_symlinks=False) and any(_is_below(j, child)
                                                       for j in spec.junctions):
            yield from _leftovers(spec, child)
        else:
            yield Path(entry.path)


def _shows(spec: ViewSpec, mask: Mask) -> bool:
    """Whether the mounted view still shows what `mask` hides."""
    target = spec.mountpoint / mask.path
    if mask.kind is MaskKind.HIDDEN or not target.is_dir() or target.is_symlink():
        return os.path.lexists(target)
    return next(_leftovers(spec, mask.path), None) is not None


def _count(path: Path, limit: int) -> int:
    n = 0
    for _, dirs, files in os.walk(path):
        n += len(dirs) + len(files)
        if n > limit:
            break
    return n


def _remove_through_view(path: Path) -> bool:
    """Remove `path` and what is below it through the view: each removal leaves a whiteout.
    A mount below the view (a bind at the junction of an export gone since, which the next
    `nfs apply` undoes) is never entered: it is the real tree. False if one was left."""
    if path.is_dir() and not path.is_symlink():
        if os.path.ismount(path):
            log.warning("nfs.view.mount_kept path=%s reason=%s", path,
                        "a mount below the view: never emptied through it")
            return False
        emptied = [_remove_through_view(Path(entry.path)) for entry in os.scandir(path)]
        if not all(emptied):
            return False
        path.rmdir()
    else:
        path.unlink()
    return True


def _apply_live(spec: ViewSpec, mask: Mask) -> None:
    target = spec.mountpoint / mask.path
    if mask.kind is MaskKind.EMPTIED and target.is_dir() and not target.is_symlink():
        for leftover in list(_leftovers(spec, mask.path)):
            _remove_through_view(leftover)
        _others_may_enter(target)  # the chmod copies it up: the lower keeps its mode
    else:
        _remove_through_view(target)


def update_view(spec: ViewSpec) -> ViewStatus:
    """Add missing junctions and masks to a mounted view, through the view itself.

    Going through the mount (remounted rw for a moment) is what overlayfs supports; the
    changes land in the tmpfs upper: unlinking a file leaves a whiteout, emptying a directory
    one whiteout per entry (bounded by `LIVE_EMPTY_LIMIT`; past it the mask is `deferred`
    and a remount of the view applies it). Masks are only ever added while mounted: a file
    that becomes readable again shows after the view's next mount. Junctions of removed nodes
    stay (empty directories, harmless; `nfs apply` never deletes).
    """
    missing = [j for j in spec.junctions if not (spec.mountpoint / j).is_dir()]
    # oneroot's own dirs hold junctions only (opaque since the mount; junctions of removed
    # nodes stay): never emptied live.
    owned = {rel for rel, _ in spec.policy.owned}
    masks = masks_of(spec)
    showing = [m for m in masks if m.path not in owned and _shows(spec, m)]
    deferred = tuple(m for m in showing if m.kind is MaskKind.EMPTIED and _count(
        spec.mountpoint / m.path, LIVE_EMPTY_LIMIT) > LIVE_EMPTY_LIMIT)
    applied = [m for m in showing if m not in deferred]
    if missing or applied:
        with _writable(spec.mountpoint):
            for rel in missing:
                (spec.mountpoint / rel).mkdir(mode=0o755, parents=True, exist_ok=True)
                for step in (rel, *rel.parents):  # walkable as nobody (all_squash)
                    if os.lstat(spec.mountpoint / step).st_mode & OTHERS_RX != OTHERS_RX:
                        _others_may_enter(spec.mountpoint / step)
            for mask in applied:
                _apply_live(spec, mask)
        log.info("nfs.view.updated image=%s junctions_added=%d masks_added=%d", spec.name,
                 len(missing), len(applied))
    for mask in deferred:
        log.warning("nfs.view.mask_deferred image=%s path=%s reason=%s", spec.name, mask.path,
                    "too many entries to empty live: remount the view")
    return ViewStatus(spec=spec, mounted=True, junctions_added=tuple(missing),
                      masks_added=tuple(applied), deferred=deferred,
                      handles_blocked=_block_handles(spec, masks))


def unmount_view(spec: ViewSpec) -> None:
    """Unmount the view and its tmpfs (stop the NFS server exporting it first)."""
    mounts = read_mounts()
    if mount_at(spec.mountpoint, mounts) is not None:
        _run("umount", str(spec.mountpoint))
    if mount_at(spec.upper_mount, mounts) is not None:
        _run("umount", str(spec.upper_mount))
    log.info("nfs.view.unmounted image=%s", spec.name)


def shows(spec: ViewSpec) -> list[Mask]:
    """The masks a mounted view does not apply yet (for `oneroot doctor`)."""
    owned = {rel for rel, _ in spec.policy.owned}
    return [m for m in masks_of(spec) if m.path not in owned and _shows(spec, m)]
