"""Boot files fetched from another server by content hash: only the announced bytes, with the
announced hash, at a plain path inside the boot directory, or nothing at all."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from oneroot.inventory.payloads import Payload, PayloadStore, Wanted
from oneroot.ops.payloads import BootIndex, PayloadRefused, fetch_payload
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
    files = index.scan()
    assert [(f.name, f.sha256, f.size) for f in files] == [("images/vmlinuz", SHA, len(GOOD))]
    assert index.path_for(SHA) == boot / "images" / "vmlinuz"
    assert index.path_for(hashlib.sha256(b"secret").hexdigest()) is None
    os.utime(boot / "images" / "vmlinuz", ns=(1, 1))  # hashed again when it changes
    (boot / "images" / "vmlinuz").write_bytes(b"new")
    assert index.scan()[0].sha256 == hashlib.sha256(b"new").hexdigest()


def test_index_is_bounded(tmp_path: Path) -> None:
    for n in range(5):
        (tmp_path / f"f{n}").write_bytes(b"x")
    assert len(BootIndex(tmp_path, max_files=3).scan()) == 3


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
