"""What a copy of a live system brings into an image that nodes read as it is: password
hashes, SSH host and user keys, Kerberos and munge keys (`copied_secrets`).

A live root (`oneroot image use /`) reaches the nodes only through its masked view
(`nfs.viewpolicy` hides these and more). An image made from a *copy* of a live root (`rsync`
or `cp -a` of a server's disk, the knfsd bench's `rootcopy`) is exported as it is: every node
reads the copied server's `/etc/shadow` hashes and its SSH host keys (root on a node reads
them: images are exported `no_root_squash`) and could pose as that server. Nothing stops such
an image (an image may keep a root password on purpose); `image use` and `oneroot doctor`
say what it holds. The image is read inside its own tree: links are followed as a node would
follow them, never out of it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from oneroot.errors import InvalidValue
from oneroot.fsutil.inside import resolve_inside
from oneroot.fsutil.nofollow import FILE_FLAGS
from oneroot.model.cluster import Image, Settings
from oneroot.render.cluster import needs_view

SHADOW_READ = 1 << 20  # bytes of etc/shadow read (a few thousand accounts)
NAMES_SHOWN = 5  # accounts and files named per finding
# Files whose presence is the secret (fnmatch `*` within the directory).
KEY_FILES: tuple[tuple[str, str, str], ...] = (
    ("etc/ssh", "ssh_host_*_key", "SSH host private keys"),
    ("etc", "krb5.keytab", "a Kerberos keytab"),
    ("etc/munge", "munge.key", "a munge key"),
)
HINT = ("if the image is a copy of a live system, let the nodes boot that system through its "
        "masked view instead (`oneroot image use /` on it), or remove these from the image "
        "(`oneroot image exec NAME -- rm …` makes a version without them); an image that "
        "keeps a root password on purpose can ignore this")


def read_as_it_is(image: Image, settings: Settings) -> bool:
    """Whether nodes read the image as it is: not a live root, which they read through its
    masked view."""
    return not (image.live or needs_view(image.root, state_dir=settings.state_dir,
                                         group_dir=settings.group_dir))


def unmasked_secrets(image: Image, settings: Settings) -> tuple[str, ...]:
    """`copied_secrets` of an image nodes read as it is; () for a live root."""
    return copied_secrets(Path(image.root)) if read_as_it_is(image, settings) else ()


def copied_secrets(root: Path) -> tuple[str, ...]:
    """What of a live system the image at `root` holds, one phrase each
    (`etc/shadow has password hashes: root, alice`)."""
    found: list[str] = []
    for rel in ("etc/shadow", "etc/gshadow"):
        holders = _hash_holders(_read(root, rel))
        if holders:
            found.append(f"{rel} has password hashes: {_names(holders)}")
    for directory, pattern, what in KEY_FILES:
        keys = sorted(p.name for p in _entries(root, directory) if p.match(pattern)
                      and p.is_file() and not p.is_symlink())
        if keys:
            found.append(f"{what}: {_names([f'{directory}/{k}' for k in keys])}")
    homes = ["root", *(f"home/{p.name}" for p in _entries(root, "home"))]
    ssh = [f"{home}/.ssh" for home in homes if any(_entries(root, f"{home}/.ssh"))]
    if ssh:
        found.append(f"SSH user keys: {_names(ssh)}")
    return tuple(found)


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown + (f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else "")


def _hash_holders(text: str) -> list[str]:
    """The accounts of a shadow file whose password field is a hash (locked with `!` or
    not: a locked hash can still be cracked); `*`, `!`, `!!`, `x` and empty are none."""
    holders = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 2:
            continue
        password = fields[1].lstrip("!")
        if password and password != "x" and not password.startswith("*"):
            holders.append(fields[0])
    return holders


def _inside(root: Path, rel: str) -> Path | None:
    try:
        return resolve_inside(root, rel)
    except (InvalidValue, OSError):  # a link loop, a file used as a directory
        return None


def _read(root: Path, rel: str) -> str:
    """The text of a regular file inside the image (bounded), or "" if there is none."""
    path = _inside(root, rel)
    if path is None:
        return ""
    try:
        fd = os.open(path, FILE_FLAGS)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return os.read(fd, SHADOW_READ).decode(errors="replace")
    finally:
        os.close(fd)


def _entries(root: Path, rel: str) -> list[Path]:
    """The entries of a directory inside the image, or [] if there is none."""
    path = _inside(root, rel)
    if path is None or path.is_symlink() or not path.is_dir():
        return []
    try:
        return sorted(path.iterdir())
    except OSError:
        return []
