"""Boot files fetched from another server by content hash: only the announced bytes, with the
announced hash, at a plain path inside the boot directory, or nothing at all."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oneroot.inventory.payloads import Payload, PayloadStore, Wanted
from oneroot.model.limits import DEFAULT_LIMITS
from oneroot.ops.payloads import (
    SETTLE_SECONDS,
    BootIndex,
    PayloadRefused,
    _hash_if_still,
    fetch_payload,
)
from oneroot.serve.replication import PayloadReplicator
from oneroot.testing.postgres import StoreAt

GOOD = b"kernel bytes " * 1000
SHA = hashlib.sha256(GOOD).hexdigest()


class Peer:
    """A loopback HTTP server answering /payload/<sha> with `body`."""

    def __init__(self) -> None:
        self.body = GOOD
        peer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(peer.body)))
                self.end_headers()
                self.wfile.write(peer.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def peer() -> Iterator[Peer]:
    running = Peer()
    yield running
    running.server.shutdown()
    running.server.server_close()


def wanted(peer: Peer, name: str = "images/vmlinuz", *, size: int = len(GOOD),
           sha: str = SHA) -> Wanted:
    return Wanted(name=name, sha256=sha, size=size, sources=(peer.url,))


def leftovers(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def test_fetched_file_is_verified_and_in_place(tmp_path: Path, peer: Peer) -> None:
    assert fetch_payload(tmp_path, wanted(peer), max_bytes=1 << 20) == peer.url
    assert (tmp_path / "images" / "vmlinuz").read_bytes() == GOOD


@pytest.mark.parametrize("body", [b"x" * len(GOOD), GOOD + b"more", GOOD[:-1]],
                         ids=["other bytes", "longer", "shorter"])
def test_a_body_other_than_the_announced_one_is_refused(tmp_path: Path, peer: Peer,
                                                         body: bytes) -> None:
    peer.body = body
    with pytest.raises(PayloadRefused):
        fetch_payload(tmp_path, wanted(peer), max_bytes=1 << 20)
    assert [p for p in leftovers(tmp_path) if "vmlinuz" in p] == []  # no file, no temp file


@pytest.mark.parametrize("name", ["../escape", "/etc/escape", "a/../../escape", ""])
def test_a_name_outside_the_boot_directory_is_refused(tmp_path: Path, peer: Peer,
                                                       name: str) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    with pytest.raises(PayloadRefused):
        fetch_payload(boot, wanted(peer, name), max_bytes=1 << 20)
    assert leftovers(tmp_path) == []


def test_a_link_in_the_boot_directory_is_not_followed(tmp_path: Path, peer: Peer) -> None:
    boot, outside = tmp_path / "boot", tmp_path / "outside"
    boot.mkdir()
    outside.mkdir()
    (boot / "images").symlink_to(outside)
    with pytest.raises(PayloadRefused):
        fetch_payload(boot, wanted(peer), max_bytes=1 << 20)
    assert leftovers(outside) == []


def test_over_the_size_limit_is_refused_before_fetching(tmp_path: Path, peer: Peer) -> None:
    with pytest.raises(PayloadRefused, match="over the limit"):
        fetch_payload(tmp_path, wanted(peer), max_bytes=len(GOOD) - 1)
    assert leftovers(tmp_path) == []


def test_index_holds_regular_files_only(tmp_path: Path) -> None:
    (tmp_path / "outside").write_bytes(b"secret")
    boot = tmp_path / "boot"
    (boot / "images").mkdir(parents=True)
    (boot / "images" / "vmlinuz").write_bytes(GOOD)
    (boot / "leak").symlink_to(tmp_path / "outside")
    index = BootIndex(boot, max_files=10)
    files = index.scan(now=time.time() + 10)  # written a while ago
    assert [(f.name, f.sha256, f.size) for f in files] == [("images/vmlinuz", SHA, len(GOOD))]
    assert index.path_for(SHA) == boot / "images" / "vmlinuz"
    assert index.path_for(hashlib.sha256(b"secret").hexdigest()) is None
    os.utime(boot / "images" / "vmlinuz", ns=(1, 1))  # hashed again when it changes
    (boot / "images" / "vmlinuz").write_bytes(b"new")
    assert index.scan(now=time.time() + 10)[0].sha256 == hashlib.sha256(b"new").hexdigest()


def test_a_file_being_written_is_published_once_it_is_still(tmp_path: Path) -> None:
    (tmp_path / "vmlinuz").write_bytes(GOOD[:100])  # a copy under way: its time is now
    index = BootIndex(tmp_path, max_files=10)
    assert index.scan() == []
    assert index.settling == {"vmlinuz"} and index.path_for(
        hashlib.sha256(GOOD[:100]).hexdigest()) is None
    with (tmp_path / "vmlinuz").open("ab") as f:
        f.write(GOOD[100:])
    files = index.scan(now=time.time() + 2 * SETTLE_SECONDS)  # still since
    assert [(f.name, f.sha256) for f in files] == [("vmlinuz", SHA)] and not index.settling
    os.utime(tmp_path / "vmlinuz", (1e10, 1e10))  # a time set on purpose, far off: still
    assert len(index.scan()) == 1


def test_a_file_changed_while_it_is_hashed_is_not_published(tmp_path: Path) -> None:
    (tmp_path / "vmlinuz").write_bytes(GOOD)
    os.utime(tmp_path / "vmlinuz", (1, 1))
    before = os.stat(tmp_path / "vmlinuz")
    with (tmp_path / "vmlinuz").open("ab") as f:  # the write lands between stat and read
        f.write(b"more")
    os.utime(tmp_path / "vmlinuz", (1, 1))
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert _hash_if_still(fd, "vmlinuz", before) is None
        assert _hash_if_still(fd, "vmlinuz", os.stat(tmp_path / "vmlinuz")) is not None
    finally:
        os.close(fd)


def test_a_file_being_written_here_is_not_fetched_over(store_at: StoreAt, tmp_path: Path,
                                                       peer: Peer) -> None:
    """Another server's older copy must not replace a kernel an administrator is copying in."""
    location = store_at("payloads")
    store = PayloadStore(location)
    store.publish("s2", peer.url, [Payload(name="images/vmlinuz", sha256=SHA, size=len(GOOD),
                                           mtime=10.0)], now=1.0)
    store.close()
    boot = tmp_path / "boot"
    (boot / "images").mkdir(parents=True)
    (boot / "images" / "vmlinuz").write_bytes(b"half of a new kernel")
    replicator = PayloadReplicator(location, boot_dir=boot, server="s1", url="http://s1",
                                   peers=(), limits=DEFAULT_LIMITS)
    try:
        asyncio.run(replicator.sync())
        assert (boot / "images" / "vmlinuz").read_bytes() == b"half of a new kernel"
        os.utime(boot / "images" / "vmlinuz", (1, 1))  # still, and older: the peer's wins
        asyncio.run(replicator.sync())
        assert (boot / "images" / "vmlinuz").read_bytes() == GOOD
        # What was fetched is published at once (verified), though its time is now.
        assert replicator.path_for(SHA) == boot / "images" / "vmlinuz"
    finally:
        replicator.close()


def test_index_is_bounded(tmp_path: Path) -> None:
    for n in range(5):
        (tmp_path / f"f{n}").write_bytes(b"x")
    assert len(BootIndex(tmp_path, max_files=3).scan(now=time.time() + 10)) == 3


def test_wanted_is_the_newest_content_and_who_holds_it(store_at: StoreAt) -> None:
    store = PayloadStore(store_at("payloads"))
    old = Payload(name="vmlinuz", sha256="a" * 64, size=1, mtime=10.0)
    new = Payload(name="vmlinuz", sha256="b" * 64, size=2, mtime=20.0)
    store.publish("s1", "http://10.0.0.1:8080", [old], now=1.0)
    store.publish("s2", "http://10.0.0.2:8080", [new], now=1.0)
    store.publish("s3", "http://10.0.0.3:8080", [new], now=1.0)
    got = store.wanted(exclude="s3")["vmlinuz"]
    assert (got.sha256, got.size, got.sources) == ("b" * 64, 2, ("http://10.0.0.2:8080",))
    store.publish("s2", "http://10.0.0.2:8080", [], now=2.0)  # s2 dropped its copy
    assert store.wanted(exclude="s1")["vmlinuz"].sources == ("http://10.0.0.3:8080",)
    store.close()
