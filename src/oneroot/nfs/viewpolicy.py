"""What a node may see of a live server root through the masked view: an allowlist.

A node sees the image's *system directories* (`VISIBLE`) and nothing else of the server's own
root unless the administrator exposes it (`oneroot image use / --expose PATH`). Inside what it
sees, three rules mask more, whoever owns the entry:

1. a named secret (`SECRETS`: shadow, host keys, munge, letsencrypt, wireguard, …);
2. anything others may not read (a file without `o+r`, a directory without `o+rx`): munge.key
   owned by munge, `/etc/ssl/private` 0710 root:ssl-cert, `/etc/sudoers` 0440;
3. oneroot's own trees and temp files (state dir, group dir, home, `.NAME.XXXX.tmp`), swap files.

Everything outside `VISIBLE` is *emptied* when it is a directory (it stays, as a mount point,
with nothing below it: `/home`, `/root`, `/tmp`, `/srv`, `/var/log`, …) and *hidden* when it is
a file. Symbolic links stay (`/bin -> usr/bin`, `/var/run -> /run`): their targets are checked
by the same rules. An exposed path overrides the allowlist and rules 1-2 for itself (not for
what is below it: exposing `/home` still hides `/home/*/.ssh`).

`plan_masks` is the whole decision: it walks the visible trees of `lower` on `lower`'s own
filesystem (overlayfs shows no submount of its lower, so neither does the walk) and returns each
mask with its reason, which `oneroot image show /` prints.
"""

from __future__ import annotations

import enum
import fnmatch
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

P = PurePosixPath

# The system directories a node sees (relative to the root).
VISIBLE: tuple[str, ...] = (
    "bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "opt", "var/lib", "var/opt",
)
# Named secrets inside what a node sees (and, for the record, outside it); fnmatch patterns,
# `*` matches one path component.
SECRETS: tuple[str, ...] = (
    "etc/shadow", "etc/shadow-", "etc/gshadow", "etc/gshadow-", "etc/security/opasswd",
    "etc/ssh/ssh_host_*_key", "etc/krb5.keytab", "etc/munge", "etc/letsencrypt",
    "etc/wireguard", "etc/ipsec.secrets", "etc/ipsec.d/private", "etc/ppp/*-secrets",
    "etc/mysql/debian.cnf", "etc/sssd", "etc/ssl/private", "etc/NetworkManager/system-connections",
    "etc/sudoers", "etc/sudoers.d",
    "var/lib/samba/private", "var/lib/systemd/credential.secret", "var/lib/nfs", "var/lib/dhcp",
    "var/lib/sss", "var/lib/private", "var/cache/debconf/passwords.dat", "var/log/journal",
    "var/spool/cron", "var/backups",
    "root", "home/*/.ssh", "home/*/.gnupg", "root/.ssh", "root/.gnupg",
)
TEMP_PATTERNS: tuple[str, ...] = (".*.tmp", "oneroot-edit-*")  # oneroot's write/edit temps


class MaskKind(enum.StrEnum):
    HIDDEN = "hidden"    # a whiteout: the entry is gone
    EMPTIED = "emptied"  # an opaque directory: it exists, nothing below it shows


@dataclass(frozen=True, slots=True, kw_only=True)
class Mask:
    path: PurePosixPath  # relative to the view's lower
    kind: MaskKind
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ViewPolicy:
    """The inputs of the decision. `owned` are oneroot's trees (state, groups, home) relative
    to the lower, emptied with `reason`; `expose` are the administrator's additions."""

    owned: tuple[tuple[PurePosixPath, str], ...] = ()
    expose: tuple[PurePosixPath, ...] = ()
    swap_files: tuple[PurePosixPath, ...] = ()


def _by_depth_and_head(patterns: tuple[str, ...]
                       ) -> dict[tuple[int, str], tuple[tuple[str, tuple[str, ...]], ...]]:
    """The patterns split into components once, keyed by (depth, first component): the walk
    asks this for every entry of the root (~10^5), and only /etc, /var, /root and /home
    entries have candidates. Every first component is a literal (checked here)."""
    table: dict[tuple[int, str], list[tuple[str, tuple[str, ...]]]] = {}
    for pattern in patterns:
        parts = P(pattern).parts
        if any(c in parts[0] for c in "*?["):
            raise ValueError(f"secret pattern {pattern!r}: its first component must be literal")
        table.setdefault((len(parts), parts[0]), []).append((pattern, parts))
    return {key: tuple(value) for key, value in table.items()}


_SECRETS = _by_depth_and_head(SECRETS)
_TEMP = re.compile("|".join(fnmatch.translate(t) for t in TEMP_PATTERNS))


def secret_reason(rel: PurePosixPath) -> str | None:
    parts = rel.parts
    for pattern, pattern_parts in _SECRETS.get((len(parts), parts[0] if parts else ""), ()):
        if all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pattern_parts, strict=True)):
            return f"secret ({pattern})"
    if _TEMP.match(rel.name):
        return "oneroot temp file"
    return None


def unreadable_reason(st: os.stat_result) -> str | None:
    """Why others may not read this entry, or None."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return None
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
        return "special file"
    need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
    if mode & need != need:
        return (f"not world-readable (mode {stat.S_IMODE(mode):04o} "
                f"uid {st.st_uid} gid {st.st_gid})")
    return None


def _below_or_equal(path: PurePosixPath, parent: PurePosixPath) -> bool:
    return path.parts[: len(parent.parts)] == parent.parts


def _kind(st: os.stat_result) -> MaskKind:
    return MaskKind.EMPTIED if stat.S_ISDIR(st.st_mode) else MaskKind.HIDDEN


def _visible(policy: ViewPolicy) -> list[PurePosixPath]:
    return [P(v) for v in VISIBLE] + list(policy.expose)


def _decide(policy: ViewPolicy, rel: PurePosixPath, st: os.stat_result, *,
            allowed: bool) -> Mask | None:
    """The mask of the entry at `rel` (with its lstat), given whether it is inside the
    allowlist (or on the way to something that is)."""
    owned = dict(policy.owned)
    if rel in owned:
        return Mask(path=rel, kind=_kind(st), reason=owned[rel])
    if rel in policy.swap_files:
        return Mask(path=rel, kind=MaskKind.HIDDEN, reason="swap file")
    if rel in policy.expose:
        return None
    reason = secret_reason(rel) or unreadable_reason(st)
    if reason is None and not allowed and not stat.S_ISLNK(st.st_mode):
        reason = "not a system directory (allowlist)"
    return Mask(path=rel, kind=_kind(st), reason=reason) if reason else None


def _allowed(visible: list[PurePosixPath], rel: PurePosixPath) -> tuple[bool, bool]:
    """(inside the allowlist, on the way to something inside it)."""
    inside = any(_below_or_equal(rel, v) for v in visible)
    return inside, not inside and any(_below_or_equal(v, rel) for v in visible)


def mask_of_path(lower: Path, policy: ViewPolicy, rel: PurePosixPath) -> Mask | None:
    """The mask that hides `rel` (itself, or the outermost masked directory above it), as
    `plan_masks` would find it, looking only along that one path (for the overlay tools)."""
    visible = _visible(policy)
    root_dev = os.lstat(lower).st_dev
    owned = dict(policy.owned)
    for i in range(1, len(rel.parts) + 1):
        prefix = P(*rel.parts[:i])
        try:
            st = os.lstat(lower / prefix)
        except OSError:  # absent: only oneroot's own dirs are masked before they exist
            return next((Mask(path=o, kind=MaskKind.EMPTIED, reason=why)
                         for o, why in owned.items() if _below_or_equal(rel, o)), None)
        inside, passing = _allowed(visible, prefix)
        mask = _decide(policy, prefix, st, allowed=inside or passing)
        if mask is not None:
            return mask
        if not stat.S_ISDIR(st.st_mode) or st.st_dev != root_dev:
            return None
    return None


def plan_masks(lower: Path, policy: ViewPolicy) -> list[Mask]:
    """Every mask the view of `lower` needs now, outermost first, none below another."""
    root_dev = os.lstat(lower).st_dev
    visible = _visible(policy)
    masks: list[Mask] = []

    def walk(rel: PurePosixPath, inside: bool) -> None:
        """`inside`: `rel` is in the allowlist, so is all below it (most of the walk)."""
        try:
            entries = sorted(os.scandir(lower / rel), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            child = rel / entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            below, passing = (True, False) if inside else _allowed(visible, child)
            mask = _decide(policy, child, st, allowed=below or passing)
            if mask is not None:
                masks.append(mask)
                continue
            if stat.S_ISDIR(st.st_mode) and st.st_dev == root_dev:
                walk(child, below)

    walk(P(), False)
    # oneroot's trees are emptied even before they exist (junctions go inside them).
    for rel, reason in policy.owned:
        if not any(_below_or_equal(rel, m.path) for m in masks):
            masks.append(Mask(path=rel, kind=MaskKind.EMPTIED, reason=reason))
    return masks


def swap_files_under(lower: Path, swaps: Path = Path("/proc/swaps")) -> tuple[PurePosixPath, ...]:
    """Swap files (from /proc/swaps) that lie inside `lower`, relative to it."""
    try:
        lines = swaps.read_text().splitlines()[1:]
    except OSError:
        return ()
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[1] == "file":
            try:
                rel = P(fields[0]).relative_to(P(lower))
            except ValueError:
                continue
            if rel.parts:
                found.append(rel)
    return tuple(found)
