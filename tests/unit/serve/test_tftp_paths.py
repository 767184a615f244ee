"""TFTP file names: what resolves under the root, and every way out that must be refused."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from oneroot.proto.tftp import ErrorCode
from oneroot.serve.tftp_paths import (
    PathRefused,
    normalize_tftp_name,
    open_tftp_file,
    resolve_tftp_path,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "tftp"
    (root / "pxelinux.cfg").mkdir(parents=True)
    (root / "pxelinux.0").write_bytes(b"PXE")
    (root / "pxelinux.cfg" / "default").write_text("DEFAULT linux\n")
    (tmp_path / "secret").write_text("outside\n")
    return root


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pxelinux.0", "pxelinux.0"),
        ("/pxelinux.0", "pxelinux.0"),  # ONE leading slash is relative to the root (GRUB)
        ("pxelinux.cfg/default", "pxelinux.cfg/default"),
        ("pxelinux.cfg//./default", "pxelinux.cfg/default"),
        ("pxelinux.cfg\\default", "pxelinux.cfg/default"),  # Windows-style separators
        ("./pxelinux.0", "pxelinux.0"),
        ("a" * 255, "a" * 255),
    ],
)
def test_normalize_accepts(name: str, expected: str) -> None:
    assert normalize_tftp_name(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "../etc/passwd",
        "a/../../x",
        "a/..",
        "..",
        "..\\..\\etc\\passwd",
        "//etc/passwd",  # still absolute after the one slash we strip
        "\\\\etc\\passwd",
        "pxelinux.0\0../../etc/passwd",
        "a" * 256,
        "é" * 128,  # 256 bytes in UTF-8
        "",
        "/",
        "./.",
    ],
)
def test_normalize_refuses(name: str) -> None:
    with pytest.raises(PathRefused) as info:
        normalize_tftp_name(name)
    assert info.value.code == ErrorCode.ACCESS_VIOLATION


def test_resolve_under_root(root: Path) -> None:
    assert resolve_tftp_path(root, "/pxelinux.cfg/default") == (
        root / "pxelinux.cfg" / "default"
    ).resolve()


def test_absolute_name_stays_in_root(root: Path) -> None:
    # "/etc/passwd" is <root>/etc/passwd, which does not exist: never the host's file.
    assert resolve_tftp_path(root, "/etc/passwd") == root.resolve() / "etc" / "passwd"
    with pytest.raises(PathRefused) as info:
        open_tftp_file(root, "/etc/passwd")
    assert info.value.code == ErrorCode.FILE_NOT_FOUND


def test_symlink_out_of_root_is_refused(root: Path) -> None:
    (root / "escape").symlink_to(root.parent / "secret")
    (root / "escape_dir").symlink_to("/etc")
    (root / "escape_rel").symlink_to("../secret")
    for name in ("escape", "escape_dir/passwd", "escape_rel"):
        with pytest.raises(PathRefused) as info:
            resolve_tftp_path(root, name)
        assert info.value.code == ErrorCode.ACCESS_VIOLATION


def test_symlink_inside_root_is_followed(root: Path) -> None:
    (root / "boot.0").symlink_to("pxelinux.0")
    (root / "cfg").symlink_to("pxelinux.cfg")
    source = open_tftp_file(root, "boot.0")
    assert source.read(100) == b"PXE"
    source.close()
    source = open_tftp_file(root, "cfg/default")
    assert source.size() == len("DEFAULT linux\n")
    source.close()


def test_root_that_is_itself_a_symlink(tmp_path: Path, root: Path) -> None:
    link = tmp_path / "link-to-root"
    link.symlink_to(root)
    source = open_tftp_file(link, "pxelinux.0")
    assert source.read(10) == b"PXE"
    source.close()


def test_open_reads_whole_file_in_exact_chunks(root: Path) -> None:
    (root / "big").write_bytes(bytes(range(256)) * 4000)
    source = open_tftp_file(root, "big")
    assert source.size() == 1_024_000
    chunks = []
    while len(chunk := source.read(1468)) == 1468:
        chunks.append(chunk)
    chunks.append(chunk)
    source.close()
    assert b"".join(chunks) == bytes(range(256)) * 4000


def test_directory_is_not_found(root: Path) -> None:
    with pytest.raises(PathRefused) as info:
        open_tftp_file(root, "pxelinux.cfg")
    assert info.value.code == ErrorCode.FILE_NOT_FOUND


def test_missing_file(root: Path) -> None:
    with pytest.raises(PathRefused) as info:
        open_tftp_file(root, "nope")
    assert info.value.code == ErrorCode.FILE_NOT_FOUND


def test_fifo_and_socket_are_refused_without_blocking(root: Path) -> None:
    os.mkfifo(root / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))
    try:
        for name in ("fifo", "sock"):
            with pytest.raises(PathRefused) as info:
                open_tftp_file(root, name)
            assert info.value.code in (ErrorCode.ACCESS_VIOLATION, ErrorCode.NOT_DEFINED)
    finally:
        sock.close()


def test_device_file_is_refused(root: Path) -> None:
    (root / "null").symlink_to("/dev/null")  # outside the root anyway
    with pytest.raises(PathRefused):
        open_tftp_file(root, "null")


def test_unreadable_file_is_access_violation(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The suite runs as root, who reads any file: make open() answer EACCES instead.
    def deny(path: object, flags: int) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(PathRefused) as info:
        open_tftp_file(root, "pxelinux.0")
    assert info.value.code == ErrorCode.ACCESS_VIOLATION
