"""Forged overlayfs handles against the masked view, decoded by the kernel the way an NFS
server decodes them (`open_by_handle_at` on the view: knfsd and ganesha's FSAL_VFS both end in
overlayfs's `ovl_fh_to_dentry`). No NFS server, no QEMU: the same attack through knfsd in the
server VM is `tests/e2e/test_knfsd.py::test_forged_handles_are_refused`.

A handle of a file the view shows, with its last bytes (the lower filesystem's inode and
generation, as a leak would give them) swapped for a masked file's, reads that file unless
the view's index holds a whiteout for it (`oneroot.nfs.viewhandles`). The control: a secret
created after the view is up is read by its forged handle until the rescan (`update_view`)
blocks it, so the attack is real here and the index is what stops it. What it does not stop
is pinned too: the same handle spelled otherwise (`KNOWN_SPELLING_GAP`).
"""

from __future__ import annotations

import ctypes
import os
import shutil
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from oneroot.nfs import mount_view, unmount_view, update_view, view_spec
from oneroot.nfs.view import ViewSpec, masks_of, read_mounts
from oneroot.nfs.viewhandles import AT_FDCWD, FileHandle, exposed_by_handle, handle_at
from oneroot.ops.doctor_server import exposure_finding

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, open_by_handle_at)"),
]

VISIBLE = {"etc/passwd": "public\n", "usr/bin/tool": "tool\n"}
SECRETS = {"etc/shadow": "shadow secret\n",  # a hidden file
           "root/.bash_history": "root secret\n",  # below an emptied directory
           "home/alice/.ssh/id_ed25519": "alice key\n",  # two levels below one
           "var/lib/oneroot/inventory.db": "inventory\n"}  # oneroot's home


def _read_by_handle(mount: Path, handle_type: int, handle: bytes) -> str:
    """open_by_handle_at(2) through the view: the file's text, or the error's name."""
    libc = ctypes.CDLL(None, use_errno=True)
    fh = FileHandle(handle_bytes=len(handle), handle_type=handle_type)
    ctypes.memmove(fh.f_handle, handle, len(handle))
    mount_fd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = libc.open_by_handle_at(mount_fd, ctypes.byref(fh), os.O_RDONLY)
        if fd < 0:
            return os.strerror(ctypes.get_errno())
        with os.fdopen(fd) as f:
            return f.read()
    finally:
        os.close(mount_fd)


def _forged(spec: ViewSpec, rel: str) -> tuple[int, bytes]:
    """The view's own handle of a file it shows, with the lower handle of `rel` in place of
    that file's: what a node sends knowing `rel`'s inode and generation."""
    shown_type, shown = handle_at(AT_FDCWD, str(spec.mountpoint / "etc/passwd"))
    _, passwd = handle_at(AT_FDCWD, str(spec.lower / "etc/passwd"))
    _, wanted = handle_at(AT_FDCWD, str(spec.lower / rel))
    assert shown.endswith(passwd) and len(wanted) == len(passwd)
    return shown_type, shown[:-len(passwd)] + wanted


@pytest.fixture
def view() -> Iterator[ViewSpec]:
    # On / itself (ext4 here): overlayfs needs xattrs and file handles from its lower.
    base = Path("/var/tmp") / f"oneroot-view-handles-{os.getpid()}"
    lower = base / "root"
    for rel, text in {**VISIBLE, **SECRETS}.items():
        (lower / rel).parent.mkdir(parents=True, exist_ok=True)
        (lower / rel).write_text(text)
    spec = view_spec("default", lower=lower, views_dir=base / "views",
                     state_dir=PurePosixPath(lower / "var/state/systems"),
                     group_dir=PurePosixPath(lower / "var/state/groups"),
                     hidden_dirs=[PurePosixPath(lower / "var/lib/oneroot")])
    try:
        yield spec
    finally:
        unmount_view(spec)
        shutil.rmtree(base, ignore_errors=True)


def test_forged_handles_of_masked_files_are_stale(view: ViewSpec) -> None:
    status = mount_view(view)
    # The controls: the view's own handle, and a forged one of another shown file, read.
    assert _read_by_handle(view.mountpoint, *handle_at(
        AT_FDCWD, str(view.mountpoint / "etc/passwd"))) == "public\n"
    assert _read_by_handle(view.mountpoint, *_forged(view, "usr/bin/tool")) == "tool\n"
    for rel in SECRETS:
        assert not (view.mountpoint / rel).exists()  # hidden by name
        assert _read_by_handle(view.mountpoint, *_forged(view, rel)) == os.strerror(
            116), rel  # ESTALE: and by handle
    assert status.handles_blocked >= len(SECRETS)


def test_a_secret_made_later_is_blocked_by_the_rescan(view: ViewSpec) -> None:
    mount_view(view)
    later = view.lower / "root/made-later"
    later.write_text("made later\n")
    forged = _forged(view, "root/made-later")
    assert not (view.mountpoint / "root/made-later").exists()
    # Without its index whiteout the forged handle reads it: the attack, for real.
    assert _read_by_handle(view.mountpoint, *forged) == "made later\n"
    blocked = update_view(view).handles_blocked
    assert _read_by_handle(view.mountpoint, *forged) == os.strerror(116)
    assert blocked == 1
    assert update_view(view).handles_blocked == 0  # already blocked: nothing new
    assert (view.mountpoint / "etc/passwd").read_text() == "public\n"


# Open (docs/security.md, "Forged file handles"): overlayfs names the index entry after the
# handle's bytes as sent, and decodes other spellings of the same handle. When a defence
# closes these, this test fails: move them to the refused side.
# "gen0": no leak at all, the generation zeroed (ext4 takes 0 for any generation), so a node
# that scans inode numbers finds every file of the lower's filesystem.
KNOWN_SPELLING_GAP = ("any_endian", "longer", "gen0")


def _respelled(handle: bytes, how: str) -> bytes:
    """The same file's handle, spelled otherwise (V1 wire: 3 bytes of padding, then
    `struct ovl_fb`: version, magic, len, flags, type, uuid, lower handle)."""
    if how == "any_endian":
        return handle[:6] + bytes([handle[6] | 0x02]) + handle[7:]
    if how == "gen0":
        return handle[:-4] + b"\0" * 4  # ext4's fid: inode, generation (u32 each)
    return handle[:5] + bytes([handle[5] + 4]) + handle[6:] + b"\0" * 4  # ext4 ignores it


def test_other_spellings_of_a_masked_handle_are_still_read(view: ViewSpec) -> None:
    mount_view(view)
    kind, canonical = _forged(view, "etc/shadow")
    assert _read_by_handle(view.mountpoint, kind, canonical) == os.strerror(116)
    for how in KNOWN_SPELLING_GAP:
        assert _read_by_handle(view.mountpoint, kind, _respelled(canonical, how)) == (
            "shadow secret\n"), how


def test_doctor_lists_the_world_readable_files_a_scan_reads(view: ViewSpec) -> None:
    """What the gap above exposes, as doctor reports it: every world-readable file below the
    masks, read through the view by a handle with no leaked part (inode number, generation
    0), and nothing the squashed node user could not read anyway."""
    mount_view(view)
    private = view.lower / "home/alice/.ssh/id_ed25519"
    private.chmod(0o600)
    masks = [m.path for m in masks_of(view)]
    exposure = exposed_by_handle(view.lower, masks)
    listed = {str(p) for p in exposure.examples}
    assert exposure.complete and exposure.count == len(listed) == 3, listed
    assert listed == {"etc/shadow", "root/.bash_history", "var/lib/oneroot/inventory.db"}
    kind, canonical = _forged(view, "etc/passwd")
    for rel in listed:  # the attack behind the report, for real
        _, fid = handle_at(AT_FDCWD, str(view.lower / rel))
        gen0 = canonical[:-len(fid)] + fid[:-4] + b"\0" * 4
        assert _read_by_handle(view.mountpoint, kind, gen0) == SECRETS[rel], rel
    finding = exposure_finding("default", view, read_mounts())
    assert str(finding.level) == "warning" and "3 world-readable" in finding.message
    assert "scans inode numbers" in finding.message  # the lower is ext4 here
    for rel in listed:
        (view.lower / rel).chmod(0o640)
    assert exposure_finding("default", view, read_mounts()).level == "ok"
