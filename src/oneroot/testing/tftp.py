"""TFTP test helpers on loopback: the service on a loop of its own in a thread, a crafted
client that speaks one packet at a time, and a relay that loses datagrams (seeded).

    with ServerThread(root, timeout=0.5) as srv:
        client = CraftedClient(srv.port)
        client.send_request(rrq("pxelinux.0", blksize="1432"))
"""

from __future__ import annotations

import asyncio
import random
import selectors
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oneroot.model.events import BootEvent
from oneroot.proto.tftp import Error, ReadRequest, parse_packet
from oneroot.serve.tftp import TftpService

HOST = "127.0.0.1"


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
        assert self._ready.wait(60), "TFTP service did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self.service.close)
        self._thread.join(10)

    @property
    def port(self) -> int:
        return self.service.port

    def wait_event(self, predicate: Callable[[BootEvent], bool], timeout: float = 30.0
                   ) -> BootEvent:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for event in self.events:
                    if predicate(event):
                        return event
            time.sleep(0.01)
        raise AssertionError(f"no matching event in {self.events}")


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

    def receive(self, timeout: float = 30.0) -> bytes | None:
        """The next datagram, or None after `timeout`. The default bounds the wait for a packet
        that must come (2 s assumed a fast server on a loaded machine); to check that nothing
        comes, pass the short window that means it."""
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
