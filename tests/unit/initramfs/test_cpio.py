"""The newc writer: GNU cpio reads back what we wrote, and equal inputs give equal bytes."""

from __future__ import annotations

import gzip
import os
import random
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from oneroot.errors import BuildError
from oneroot.initramfs.cpio import Compression, CpioArchive, EntryKind, compress

needs_cpio = pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio not installed")
needs_zstd = pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd not installed")
IS_ROOT = os.geteuid() == 0


def sample_archive(tmp_path: Path) -> CpioArchive:
    host = tmp_path / "host-file"
    host.write_bytes(b"from the host\n" * 100)
    host.chmod(0o750)
    archive = CpioArchive()
    archive.add_file("init", b"#!/bin/sh\necho hi\n", mode=0o755)
    archive.add_file("etc/empty", b"")
    archive.add_file("etc/odd", b"abc")  # 3 bytes: data padding
    archive.add_file_from("usr/bin/tool", host)
    archive.add_dir("proc", mode=0o555)
    archive.add_symlink("bin/sh", "busybox")
    archive.add_symlink("lib64", "usr/lib")
    archive.add_char_device("dev/console", 5, 1)
    archive.add_char_device("dev/null", 1, 3, mode=0o666)
    archive.add_block_device("dev/vda", 254, 0, mode=0o660)
    return archive


def extract(data: bytes, dest: Path) -> None:
    dest.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=data,
                   cwd=dest, check=True, capture_output=True)


def parse_newc(data: bytes) -> list[tuple[str, dict[str, int], bytes]]:
    """An independent reader: checks magic and 4-byte alignment of every header and body."""
    names = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor",
             "devminor", "rdevmajor", "rdevminor", "namesize", "check")
    out: list[tuple[str, dict[str, int], bytes]] = []
    pos = 0
    while True:
        assert pos % 4 == 0
        assert data[pos:pos + 6] == b"070701"
        fields = {n: int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16)
                  for i, n in enumerate(names)}
        name_end = pos + 110 + fields["namesize"]
        name = data[pos + 110:name_end - 1].decode()
        assert data[name_end - 1] == 0
        body = name_end + (-name_end % 4)
        content = data[body:body + fields["filesize"]]
        pos = body + fields["filesize"] + (-(body + fields["filesize"]) % 4)
        if name == "TRAILER!!!":
            assert pos == len(data)
            return out
        out.append((name, fields, content))


def test_headers_are_aligned_sorted_and_normalized(tmp_path: Path) -> None:
    entries = parse_newc(sample_archive(tmp_path).to_bytes(mtime=1234))
    names = [n for n, _, _ in entries]
    assert names == sorted(names)
    assert "bin" in names and "usr" in names and "usr/bin" in names  # parents added
    assert [f["ino"] for _, f, _ in entries] == list(range(1, len(entries) + 1))
    for _, fields, _ in entries:
        assert fields["uid"] == fields["gid"] == 0
        assert fields["mtime"] == 1234
        assert fields["nlink"] == (2 if stat.S_ISDIR(fields["mode"]) else 1)
    by_name = {n: (f, c) for n, f, c in entries}
    console, _ = by_name["dev/console"]
    assert stat.S_ISCHR(console["mode"]) and (console["rdevmajor"], console["rdevminor"]) == (5, 1)
    vda, _ = by_name["dev/vda"]
    assert stat.S_ISBLK(vda["mode"]) and stat.S_IMODE(vda["mode"]) == 0o660
    link, target = by_name["bin/sh"]
    assert stat.S_ISLNK(link["mode"]) and target == b"busybox"


@needs_cpio
def test_gnu_cpio_extracts_what_we_wrote(tmp_path: Path) -> None:
    data = sample_archive(tmp_path).to_bytes(mtime=1_700_000_000)
    root = tmp_path / "out"
    extract(data, root)
    assert (root / "init").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE((root / "init").stat().st_mode) == 0o755
    assert (root / "etc/empty").read_bytes() == b""
    assert (root / "etc/odd").read_bytes() == b"abc"
    assert (root / "usr/bin/tool").read_bytes() == b"from the host\n" * 100
    assert stat.S_IMODE((root / "usr/bin/tool").stat().st_mode) == 0o750
    assert (root / "usr/bin/tool").stat().st_mtime == 1_700_000_000
    assert stat.S_IMODE((root / "proc").stat().st_mode) == 0o555
    assert os.readlink(root / "bin/sh") == "busybox"
    assert os.readlink(root / "lib64") == "usr/lib"
    if IS_ROOT:  # only root may create device nodes on extraction
        st = (root / "dev/console").lstat()
        assert stat.S_ISCHR(st.st_mode)
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (5, 1)
        st = (root / "dev/vda").lstat()
        assert stat.S_ISBLK(st.st_mode)
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (254, 0)


@needs_cpio
def test_gnu_cpio_lists_device_nodes(tmp_path: Path) -> None:
    data = sample_archive(tmp_path).to_bytes()
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=data, capture_output=True,
                             check=True).stdout.decode()
    console = next(line for line in listing.splitlines() if line.endswith("dev/console"))
    assert console.startswith("crw-------") and "5,   1" in console


def build_tree(base: Path, *, seed: int) -> Path:
    """The same files, written in a seed-dependent order with seed-dependent mtimes."""
    files = {f"dir{i % 3}/sub{i % 2}/file{i}": bytes([i]) * (i * 37)
             for i in range(25)}
    rng = random.Random(seed)
    order = list(files)
    rng.shuffle(order)
    root = base / f"tree{seed}"
    for rel in order:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[rel])
        path.chmod(0o644 if len(rel) % 2 else 0o755)
        t = rng.randrange(0, 2_000_000_000)
        os.utime(path, (t, t))
    (root / "link").symlink_to("dir0/sub0/file0")
    for d in sorted(root.rglob("*")):
        if d.is_dir():
            d.chmod(0o755)
            t = rng.randrange(0, 2_000_000_000)
            os.utime(d, (t, t))
    return root


def archive_from(tree: Path, *, seed: int) -> CpioArchive:
    archive = CpioArchive()
    additions: list[Callable[[], None]] = [
        lambda: archive.add_tree(tree, "opt"),
        lambda: archive.add_char_device("dev/console", 5, 1),
        lambda: archive.add_char_device("dev/null", 1, 3, mode=0o666),
        lambda: archive.add_file("init", b"#!/bin/sh\n", mode=0o755),
        lambda: archive.add_symlink("bin/sh", "busybox"),
        lambda: archive.add_dir("proc"),
    ]
    random.Random(seed).shuffle(additions)
    for add in additions:
        add()
    return archive


@pytest.mark.parametrize("compression", [
    Compression.NONE, Compression.GZIP, pytest.param(Compression.ZSTD, marks=needs_zstd)])
def test_reproducible_across_order_and_mtimes(tmp_path: Path, compression: Compression) -> None:
    outputs = []
    for seed in (1, 2, 3):
        archive = archive_from(build_tree(tmp_path, seed=seed), seed=seed)
        out = tmp_path / f"initrd-{seed}.img"
        archive.write(out, compression=compression, mtime=0)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]


def test_source_date_epoch_changes_only_the_mtimes(tmp_path: Path) -> None:
    archive = sample_archive(tmp_path)
    zero, epoch = archive.to_bytes(mtime=0), archive.to_bytes(mtime=1_600_000_000)
    assert zero != epoch and len(zero) == len(epoch)
    assert {f["mtime"] for _, f, _ in parse_newc(epoch)} == {1_600_000_000}


def test_gzip_header_carries_no_time_or_name(tmp_path: Path) -> None:
    out = tmp_path / "initrd.img"
    sample_archive(tmp_path).write(out, compression=Compression.GZIP)
    data = out.read_bytes()
    assert data[:2] == b"\x1f\x8b"
    assert data[3] == 0  # FLG: no FNAME, no comment
    assert data[4:8] == b"\0\0\0\0"  # MTIME
    assert gzip.decompress(data) == sample_archive(tmp_path).to_bytes()


@needs_zstd
def test_zstd_roundtrip_through_the_binary(tmp_path: Path) -> None:
    out = tmp_path / "initrd.img"
    archive = sample_archive(tmp_path)
    archive.write(out, compression=Compression.ZSTD, level=3)
    plain = subprocess.run(["zstd", "-d", "-c", str(out)], capture_output=True,
                           check=True).stdout
    assert plain == archive.to_bytes()


@needs_zstd
def test_zstd_into_a_stream_without_fd(tmp_path: Path) -> None:
    import io
    buf = io.BytesIO()
    archive = sample_archive(tmp_path)
    compress(archive, buf, compression=Compression.ZSTD, level=1)
    plain = subprocess.run(["zstd", "-d", "-c"], input=buf.getvalue(), capture_output=True,
                           check=True).stdout
    assert plain == archive.to_bytes()


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/../../b", "/", ".", "a\0b"])
def test_paths_that_leave_the_root_are_refused(bad: str) -> None:
    with pytest.raises(BuildError):
        CpioArchive().add_file(bad, b"x")


def test_absolute_and_dotted_paths_are_normalized() -> None:
    archive = CpioArchive()
    archive.add_file("/etc/./hosts", b"x")
    assert [e.path for e in archive.entries()] == ["etc", "etc/hosts"]


def test_a_path_is_added_once() -> None:
    archive = CpioArchive()
    archive.add_file("init", b"a")
    with pytest.raises(BuildError, match="added twice"):
        archive.add_file("init", b"b")
    archive.add_dir("etc")
    archive.add_dir("etc")  # the same directory twice is harmless


def test_a_file_cannot_be_a_parent() -> None:
    archive = CpioArchive()
    archive.add_file("bin", b"x")
    with pytest.raises(BuildError, match="not a directory"):
        archive.add_symlink("bin/sh", "busybox")


def test_add_tree_refuses_fifos(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(BuildError, match="FIFO"):
        CpioArchive().add_tree(tmp_path)


def test_entry_kinds_match_stat() -> None:
    assert stat.S_ISCHR(EntryKind.CHAR_DEVICE | 0o600)
    assert stat.S_ISLNK(EntryKind.SYMLINK | 0o777)


def test_host_files_are_read_when_the_archive_is_written(tmp_path: Path) -> None:
    src = tmp_path / "grows"
    src.write_bytes(b"12")
    archive = CpioArchive()
    archive.add_file_from("grows", src)
    src.write_bytes(b"1234")
    assert parse_newc(archive.to_bytes())[0][2] == b"1234"
