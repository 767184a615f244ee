"""TftpService against real clients (curl, atftp, tftp-hpa) and crafted sockets, on loopback.

The service runs on its own asyncio loop in a background thread, bound to 127.0.0.1 on a free
port; everything here talks only to loopback.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import selectors
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from oneroot.model.events import BootEvent
from oneroot.proto.tftp import Ack, Data, Error, ErrorCode, OptionAck, ReadRequest, parse_packet
from oneroot.serve.tftp import TftpService

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
MIB = 1024 * 1024


class ServerThread:
    """A TftpService on its own loop in a thread; events collected in `events`."""

    def __init__(self, root: Path, **options: Any) -> None:
        self.events: list[BootEvent] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self.service = TftpService(bind=HOST, port=0, root=root, on_event=self._event, **options)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _event(self, event: BootEvent) -> None:
        with self._lock:
            self.events.append(event)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            await self.service.start()
            self._ready.set()
            await self.service.run()

        self._loop.run_until_complete(main())
        self._loop.close()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(10), "TFTP service did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self.service.close)
        self._thread.join(10)

    @property
    def port(self) -> int:
        return self.service.port

    def wait_event(self, predicate: Callable[[BootEvent], bool], timeout: float = 10.0
                   ) -> BootEvent:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for event in self.events:
                    if predicate(event):
                        return event
            time.sleep(0.01)
        raise AssertionError(f"no matching event in {self.events}")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret").write_text("not for TFTP\n")
    (root / "escape").symlink_to(tmp_path / "secret")
    return root


@pytest.fixture
def server(root: Path) -> Iterator[ServerThread]:
    with ServerThread(root, timeout=0.5) as running:
        yield running


def make_file(root: Path, name: str, size: int, seed: int = 0) -> str:
    data = random.Random(seed).randbytes(size)
    (root / name).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(argv: list[str], timeout: float = 120, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=stdin,
                          check=False)


def done_for(name: str) -> Callable[[BootEvent], bool]:
    return lambda e: e.kind == "tftp.done" and e.file == name


def error_for(name: str) -> Callable[[BootEvent], bool]:
    return lambda e: e.kind == "tftp.error" and e.file == name


SIZES = [0, 511, 512, MIB + 1]


# -- real clients ----------------------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES)
def test_curl(server: ServerThread, root: Path, tmp_path: Path, size: int) -> None:
    name = f"curl-{size}.bin"
    digest = make_file(root, name, size)
    out = tmp_path / "out"
    result = run(["curl", "-sS", "--tftp-blksize", "1468", "-o", str(out),
                  f"tftp://{HOST}:{server.port}/{name}"])
    assert result.returncode == 0, result.stderr
    assert sha256(out) == digest
    event = server.wait_event(done_for(name))
    assert event.bytes == size
    assert event.detail["blksize"] == "1468"
    # curl always asks for tsize; an empty file gets none (curl refuses "tsize 0")
    assert event.detail.get("tsize") == (str(size) if size else None)


@pytest.mark.parametrize("size", SIZES)
def test_atftp_with_windowsize(server: ServerThread, root: Path, tmp_path: Path,
                               size: int) -> None:
    name = f"atftp-{size}.bin"
    digest = make_file(root, name, size)
    out = tmp_path / "out"
    result = run(["atftp", "--option", "blksize 1468", "--option", "tsize 0",
                  "--option", "windowsize 16", "-g", "-r", name, "-l", str(out),
                  HOST, str(server.port)])
    assert result.returncode == 0, result.stderr
    assert sha256(out) == digest
    event = server.wait_event(done_for(name))
    assert (event.detail["blksize"], event.detail["windowsize"], event.detail.get("tsize")) == (
        "1468", "16", str(size) if size else None)


@pytest.mark.parametrize("size", SIZES)
def test_tftp_hpa(server: ServerThread, root: Path, tmp_path: Path, size: int) -> None:
    name = f"hpa-{size}.bin"
    digest = make_file(root, name, size)
    out = tmp_path / "out"
    result = run(["tftp", "-v", "-m", "binary", HOST, str(server.port), "-c", "get", name,
                  str(out)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert sha256(out) == digest
    event = server.wait_event(done_for(name))
    assert event.detail["options"] == ""  # tftp-hpa's client speaks plain RFC 1350
    assert event.detail["blksize"] == "512"


def test_tftp_hpa_netascii(server: ServerThread, root: Path, tmp_path: Path) -> None:
    text = "".join(f"line {i}\n" if i % 7 else f"cr {i}\r\n" for i in range(3000))
    (root / "text.cfg").write_text(text)
    out = tmp_path / "out"
    result = run(["tftp", "-m", "netascii", HOST, str(server.port), "-c", "get", "text.cfg",
                  str(out)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_bytes() == text.encode()  # the client decodes netascii back
    event = server.wait_event(done_for("text.cfg"))
    assert event.bytes == len(text) + text.count("\n") + text.count("\r")


def test_rollover_past_65535_blocks(server: ServerThread, root: Path, tmp_path: Path) -> None:
    """32 MiB + 1000 bytes at blksize 512 is 65538 blocks: numbers wrap to 0 and go on."""
    size = 32 * MIB + 1000
    digest = make_file(root, "big.bin", size)
    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    hpa = run(["tftp", "-m", "binary", HOST, str(server.port), "-c", "get", "big.bin",
               str(out1)], timeout=300)
    assert hpa.returncode == 0, hpa.stdout + hpa.stderr
    assert sha256(out1) == digest
    atftp = run(["atftp", "--option", "blksize 512", "--option", "windowsize 16", "-g",
                 "-r", "big.bin", "-l", str(out2), HOST, str(server.port)], timeout=300)
    assert atftp.returncode == 0, atftp.stderr
    assert sha256(out2) == digest
    for event in [e for e in server.events if e.kind == "tftp.done"]:
        assert event.detail["blocks"] == str(65538)


def test_virtual_file_wins_over_disk(root: Path, tmp_path: Path) -> None:
    (root / "pxelinux.cfg").mkdir()
    (root / "pxelinux.cfg" / "01-52-54-00-00-00-01").write_text("from disk\n")
    rendered = b"# generated by oneroot\nDEFAULT node01\n"

    def virtual(name: str) -> bytes | None:
        return rendered if name == "pxelinux.cfg/01-52-54-00-00-00-01" else None

    with ServerThread(root, virtual=virtual) as srv:
        out = tmp_path / "out"
        result = run(["curl", "-sS", "-o", str(out),
                      f"tftp://{HOST}:{srv.port}/pxelinux.cfg/01-52-54-00-00-00-01"])
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == rendered
        assert srv.wait_event(done_for("pxelinux.cfg/01-52-54-00-00-00-01")).detail[
            "tsize"] == str(len(rendered))


# -- crafted clients -------------------------------------------------------------------------

class CraftedClient:
    """A bare UDP socket on loopback that speaks TFTP one packet at a time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.server = (HOST, port)
        self.tid: tuple[str, int] | None = None

    def send_request(self, raw: bytes) -> None:
        self.sock.sendto(raw, self.server)

    def send(self, raw: bytes) -> None:
        assert self.tid is not None
        self.sock.sendto(raw, self.tid)

    def receive(self, timeout: float = 2.0) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            data, addr = self.sock.recvfrom(70000)
        except TimeoutError:
            return None
        if self.tid is None:
            self.tid = addr
        return data

    def close(self) -> None:
        self.sock.close()


def request_error(port: int, raw: bytes) -> Error:
    client = CraftedClient(port)
    try:
        client.send_request(raw)
        reply = client.receive()
        assert reply is not None, "no answer to a request"
        packet = parse_packet(reply)
        assert isinstance(packet, Error), packet
        assert client.receive(timeout=0.2) is None  # and nothing else, no DATA ever
        return packet
    finally:
        client.close()


def rrq(name: str, **options: str) -> bytes:
    return ReadRequest(filename=name, mode="octet", options=tuple(options.items())).to_bytes()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (rrq("../etc/passwd"), ErrorCode.ACCESS_VIOLATION),
        (rrq("/etc/passwd"), ErrorCode.FILE_NOT_FOUND),  # <root>/etc/passwd: not the host's
        (rrq("//etc/passwd"), ErrorCode.ACCESS_VIOLATION),
        (rrq("a/../../x"), ErrorCode.ACCESS_VIOLATION),
        (rrq("..\\..\\etc\\passwd"), ErrorCode.ACCESS_VIOLATION),
        (rrq("escape"), ErrorCode.ACCESS_VIOLATION),  # a symlink in the root pointing out
        (rrq("x" * 300), ErrorCode.ACCESS_VIOLATION),
        (b"\x00\x01escape\x00../../secret\x00octet\x00", ErrorCode.ILLEGAL_OPERATION),  # NUL
        (b"\x00\x01ok\x00octet\x00", ErrorCode.FILE_NOT_FOUND),
        (b"\x00\x02upload\x00octet\x00", ErrorCode.ACCESS_VIOLATION),  # WRQ
        (ReadRequest(filename="ok", mode="mail").to_bytes(), ErrorCode.ILLEGAL_OPERATION),
    ],
    ids=["dotdot", "absolute", "double-slash", "inner-dotdot", "backslash", "symlink",
         "overlong", "nul", "missing", "wrq", "mail"],
)
def test_refused_requests(server: ServerThread, raw: bytes, code: ErrorCode) -> None:
    error = request_error(server.port, raw)
    assert error.code == code
    assert server.service.stats.transfers == 0


def test_traversal_with_tftp_hpa(server: ServerThread, tmp_path: Path) -> None:
    for name in ("../secret", "a/../../secret", "escape"):
        out = tmp_path / "out"
        result = run(["tftp", "-m", "binary", HOST, str(server.port), "-c", "get", name,
                      str(out)])
        assert "Error code 2" in result.stdout + result.stderr
        assert not out.exists() or out.read_bytes() == b""


def _receive_datas(client: CraftedClient, quiet: float) -> list[Data]:
    """Every DATA that arrives until the line has been `quiet` seconds (the first may take 2 s)."""
    datas: list[Data] = []
    while (raw := client.receive(timeout=quiet if datas else max(quiet, 2.0))) is not None:
        packet = parse_packet(raw)
        assert isinstance(packet, Data), packet
        datas.append(packet)
    return datas


def test_duplicate_acks_never_cause_a_resend(root: Path) -> None:
    size = 512 * 20 + 7
    data = random.Random(5).randbytes(size)
    (root / "dup.bin").write_bytes(data)
    with ServerThread(root, timeout=5.0) as srv:  # no timeout retransmit during the test
        client = CraftedClient(srv.port)
        client.send_request(rrq("dup.bin"))
        received = bytearray()
        seen: dict[int, int] = {}
        datas = _receive_datas(client, quiet=0.1)
        while True:
            assert len(datas) == 1, f"expected exactly one DATA, got {datas}"
            (packet,) = datas
            seen[packet.block] = seen.get(packet.block, 0) + 1
            received += packet.data
            for _ in range(3):  # the same ACK three times
                client.send(Ack(block=packet.block).to_bytes())
            if len(packet.data) < 512:
                break
            datas = _receive_datas(client, quiet=0.1)
        client.close()
        assert bytes(received) == data
        assert set(seen.values()) == {1}
        event = srv.wait_event(done_for("dup.bin"))
        assert event.detail["retransmits"] == "0"
        assert int(event.detail["duplicate_acks"]) >= 2 * 20


def test_duplicate_acks_in_window_mode(root: Path) -> None:
    (root / "win.bin").write_bytes(b"w" * (512 * 32))
    with ServerThread(root, timeout=5.0) as srv:
        client = CraftedClient(srv.port)
        client.send_request(rrq("win.bin", windowsize="8"))
        oack = parse_packet(client.receive() or b"")
        assert oack == OptionAck(options=(("windowsize", "8"),))
        client.send(Ack(block=0).to_bytes())
        assert [d.block for d in _receive_datas(client, 0.3)] == list(range(1, 9))
        client.send(Ack(block=8).to_bytes())
        client.send(Ack(block=8).to_bytes())
        assert [d.block for d in _receive_datas(client, 0.3)] == list(range(9, 17))
        client.send(Ack(block=8).to_bytes())  # an old one, late
        assert _receive_datas(client, 0.3) == []
        client.close()


def test_server_busy_leaves_the_request_for_the_clients_retry(root: Path) -> None:
    """Every session taken: no ERROR (a PXE ROM gives up on one), no answer at all; the
    client's resent RRQ is served once a session has ended."""
    (root / "slow.bin").write_bytes(b"s" * 1024)
    with ServerThread(root, max_sessions=1, timeout=5.0) as srv:
        first = CraftedClient(srv.port)
        first.send_request(rrq("slow.bin"))
        assert first.receive() is not None  # DATA 1, then we stall
        second = CraftedClient(srv.port)
        second.send_request(rrq("slow.bin"))
        assert second.receive(timeout=1.0) is None
        assert srv.service.stats.busy == 1
        for block in (1, 2, 3):  # DATA 2 (512 bytes), DATA 3 (0 bytes): the end
            first.send(Ack(block=block).to_bytes())
            if block < 3:
                assert parse_packet(first.receive() or b"") == Data(block=block + 1,
                                                                     data=b"s" * 512 * (2 - block))
        # The first session ends on the loop after its last ACK (a lock-step thread hands it
        # back): the ROM's next retransmission comes later than that, seconds on real hardware.
        deadline = time.monotonic() + 5.0
        while srv.service.stats.active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.service.stats.active == 0
        second.send_request(rrq("slow.bin"))  # its ROM's retransmission
        served = parse_packet(second.receive() or b"")
        assert isinstance(served, Data) and served.block == 1
        first.close()
        second.close()


def test_lockstep_thread_cap(root: Path) -> None:
    """Past `lockstep_threads` lock-step transfers, the next one is served on the loop; both
    kinds finish, byte for byte."""
    data = random.Random(3).randbytes(4096 + 100)
    (root / "slow.bin").write_bytes(data)
    with ServerThread(root, lockstep_threads=1, timeout=5.0) as srv:
        clients = [CraftedClient(srv.port) for _ in range(2)]
        received: list[list[bytes]] = []
        for client in clients:
            client.send_request(rrq("slow.bin"))
            first = parse_packet(client.receive() or b"")
            assert isinstance(first, Data) and first.block == 1
            received.append([first.data])
        assert len(srv.service._lockstep) == 1 and srv.service.stats.active == 2
        for client, chunks in zip(clients, received, strict=True):
            block = 1
            while True:
                client.send(Ack(block=block).to_bytes())
                raw = client.receive(0.5)
                if raw is None:
                    break
                packet = parse_packet(raw)
                assert isinstance(packet, Data) and packet.block == block + 1
                chunks.append(packet.data)
                block = packet.block
            assert b"".join(chunks) == data
            client.close()
        srv.wait_event(lambda e: srv.service.stats.completed == 2)
        assert not srv.service._lockstep and srv.service.stats.active == 0


def test_per_client_session_cap(root: Path, tmp_path: Path) -> None:
    """One address cannot take every session: past its cap it is refused, others are served."""
    (root / "slow.bin").write_bytes(b"s" * 4096)
    digest = make_file(root, "other.bin", 3000)
    with ServerThread(root, max_sessions=8, max_sessions_per_client=2, timeout=5.0) as srv:
        hogs = [CraftedClient(srv.port) for _ in range(2)]
        for hog in hogs:
            hog.send_request(rrq("slow.bin"))
            assert hog.receive() is not None  # DATA 1, then it stalls
        error = request_error(srv.port, rrq("slow.bin"))
        assert (error.code, error.message) == (ErrorCode.NOT_DEFINED,
                                               "too many transfers from this address")
        assert srv.service.stats.busy == 1
        out = tmp_path / "other.out"  # another address (127.0.0.2) still gets its file
        assert run(["curl", "-sS", "--interface", "127.0.0.2", "-o", str(out),
                    f"tftp://{HOST}:{srv.port}/other.bin"]).returncode == 0
        assert sha256(out) == digest
        for hog in hogs:
            hog.close()


def test_option_timeout_above_the_limit_is_not_accepted(root: Path) -> None:
    """timeout=255 would let a silent client hold its session for 25 minutes."""
    (root / "f.bin").write_bytes(b"f" * 100)
    with ServerThread(root) as srv:
        client = CraftedClient(srv.port)
        client.send_request(rrq("f.bin", timeout="255", blksize="1024"))
        assert parse_packet(client.receive() or b"") == OptionAck(options=(("blksize", "1024"),))
        client.close()
        client = CraftedClient(srv.port)
        client.send_request(rrq("f.bin", timeout="5"))
        assert parse_packet(client.receive() or b"") == OptionAck(options=(("timeout", "5"),))
        client.close()


def test_resent_rrq_does_not_start_a_second_transfer(root: Path) -> None:
    (root / "f.bin").write_bytes(b"f" * 100)
    with ServerThread(root, timeout=5.0) as srv:
        client = CraftedClient(srv.port)
        client.send_request(rrq("f.bin"))
        client.send_request(rrq("f.bin"))
        datas = _receive_datas(client, 0.3)
        assert [d.block for d in datas] == [1]  # one DATA 1: a single transfer
        client.send(Ack(block=1).to_bytes())
        srv.wait_event(done_for("f.bin"))
        assert srv.service.stats.transfers == 1
        client.close()


def test_timeout_gives_up_with_error(root: Path) -> None:
    (root / "f.bin").write_bytes(b"f" * 2000)
    with ServerThread(root, timeout=0.05, max_retries=3) as srv:
        client = CraftedClient(srv.port)
        client.send_request(rrq("f.bin"))
        packets = []
        while (raw := client.receive(timeout=0.5)) is not None:
            packets.append(parse_packet(raw))
        assert packets[:4] == [Data(block=1, data=b"f" * 512)] * 4
        assert isinstance(packets[4], Error)
        event = srv.wait_event(error_for("f.bin"))
        assert event.detail["retransmits"] == "3"
        assert srv.service.stats.failed == 1
        client.close()


def test_garbage_on_port_69_keeps_the_server_serving(server: ServerThread, root: Path,
                                                     tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for junk in (b"", b"\x00", b"\xff" * 100, Ack(block=1).to_bytes(), b"\x00\x03\x00\x01x"):
        sock.sendto(junk, (HOST, server.port))
    sock.close()
    digest = make_file(root, "after.bin", 1000)
    out = tmp_path / "out"
    assert run(["curl", "-sS", "-o", str(out),
                f"tftp://{HOST}:{server.port}/after.bin"]).returncode == 0
    assert sha256(out) == digest


# -- a lossy path ----------------------------------------------------------------------------

class LossyRelay:
    """A userspace UDP relay on loopback that drops `loss` of the datagrams each way (seeded).

    The client sends its RRQ to `port`; the relay forwards it to the server from an upstream
    socket. Replies from each server TID come back to the client from a socket of its own, so
    the client sees the TID change as it would without the relay.
    """

    def __init__(self, server_port: int, *, loss: float = 0.1, seed: int = 1) -> None:
        self._server_port = server_port
        self._loss = loss
        self._rng = random.Random(seed)
        self._sel = selectors.DefaultSelector()
        self._front = self._socket()
        self.port = self._front.getsockname()[1]
        self._upstream: dict[tuple[str, int], socket.socket] = {}
        self._facing: dict[tuple[tuple[str, int], int], socket.socket] = {}
        self._sel.register(self._front, selectors.EVENT_READ, ("front", None))
        self.dropped = self.forwarded = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        return sock

    def _forward(self, sock: socket.socket, data: bytes, addr: tuple[str, int]) -> None:
        if self._rng.random() < self._loss:
            self.dropped += 1
        else:
            self.forwarded += 1
            sock.sendto(data, addr)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(timeout=0.05):
                role, info = key.data
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                data, addr = sock.recvfrom(70000)
                if role == "front":  # a request from the client
                    up = self._upstream.get(addr)
                    if up is None:
                        up = self._upstream[addr] = self._socket()
                        self._sel.register(up, selectors.EVENT_READ, ("up", addr))
                    self._forward(up, data, (HOST, self._server_port))
                elif role == "up":  # from the server (port 69 or a TID) to the client `info`
                    facing = self._facing.get((info, addr[1]))
                    if facing is None:
                        facing = self._facing[(info, addr[1])] = self._socket()
                        self._sel.register(facing, selectors.EVENT_READ,
                                           ("facing", (info, addr[1])))
                    self._forward(facing, data, info)
                else:  # from the client to the server TID behind this facing socket
                    client, server_port = info
                    self._forward(self._upstream[client], data, (HOST, server_port))

    def __enter__(self) -> LossyRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for key in list(self._sel.get_map().values()):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            sock.close()
        self._sel.close()


@pytest.mark.parametrize("client", ["curl", "tftp-hpa", "atftp"])
def test_lossy_relay(root: Path, tmp_path: Path, client: str) -> None:
    size = 200_000
    digest = make_file(root, "lossy.bin", size, seed=9)
    out = tmp_path / "out"
    # A short server timeout keeps recovery fast; client `timeout` options are not accepted
    # (max_option_timeout=0) so the server's own interval applies. Its backoff lets atftp,
    # which re-ACKs once per timeout of its own, time out and re-ACK when that ACK was lost.
    with ServerThread(root, timeout=0.05, max_retries=10, max_interval=1.5,
                      max_option_timeout=0) as srv, \
            LossyRelay(srv.port, loss=0.1, seed=len(client)) as relay:
        if client == "curl":
            result = run(["curl", "-sS", "--connect-timeout", "20", "--tftp-blksize", "1024",
                          "-o", str(out), f"tftp://{HOST}:{relay.port}/lossy.bin"])
        elif client == "tftp-hpa":
            result = run(["tftp", HOST, str(relay.port)],
                         stdin=f"binary\nrexmt 1\nget lossy.bin {out}\nquit\n")
        else:
            result = run(["atftp", "--option", "windowsize 8", "--option", "blksize 1024",
                          "--tftp-timeout", "1", "-g", "-r", "lossy.bin", "-l", str(out),
                          HOST, str(relay.port)])
        assert result.returncode == 0, result.stdout + result.stderr
        assert sha256(out) == digest
        assert relay.dropped > 0
        # The last ACK may be among the lost ones: then the server retries and gives up on a
        # transfer the client already has, so wait for either outcome.
        srv.wait_event(lambda e: e.file == "lossy.bin", timeout=20)
        assert srv.service.stats.retransmits > 0

