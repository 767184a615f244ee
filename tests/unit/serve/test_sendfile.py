"""serve/sendfile.FileSender: a boot file's body from a thread, on duplicates of the loop's
descriptors. Each defence is attacked: the loop's socket is non-blocking again afterwards, a
client that stops reading frees its thread after `send_timeout`, `close()` and a cancelled
handler end a send at once, nothing leaks, no more than `threads` sends run, and a body that
finds them busy waits in arrival order, at most `wait` seconds."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from oneroot.serve.sendfile import THREAD_MIN_BYTES, FileSender

SIZE = 3 * THREAD_MIN_BYTES  # more than a socket pair buffers


def _file(tmp_path: Path) -> tuple[bytes, int]:
    data = os.urandom(SIZE)
    path = tmp_path / "vmlinuz"
    path.write_bytes(data)
    return data, os.open(path, os.O_RDONLY)


def _pair() -> tuple[socket.socket, socket.socket]:
    server, client = socket.socketpair()
    server.setblocking(False)  # as the loop's own socket is
    return server, client


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_body_is_sent_and_the_loop_socket_stays_non_blocking(tmp_path: Path) -> None:
    data, fd = _file(tmp_path)
    server, client = _pair()
    sender = FileSender(1)

    async def run() -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        reader = loop.run_in_executor(None, _read_exactly, client, SIZE - 100)
        assert await sender.reserve(SIZE - 100)
        sent = await sender.send(server.fileno(), fd, 100, SIZE - 100)
        return sent, await reader

    before = _open_fds()
    try:
        sent, got = asyncio.run(run())
        assert sent == SIZE - 100 and got == data[100:]
        assert not os.get_blocking(server.fileno())  # the loop's recv must never block
        assert sender.files == 1 and sender.available(SIZE)
        assert _open_fds() <= before  # the duplicates are closed
    finally:
        sender.close()
        os.close(fd)
        server.close()
        client.close()


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    chunks, got = [], 0
    while got < count:
        chunk = sock.recv(min(1 << 20, count - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def test_a_client_that_stops_reading_frees_the_thread(tmp_path: Path) -> None:
    _, fd = _file(tmp_path)
    server, client = _pair()
    sender = FileSender(1, send_timeout=0.5)

    async def run() -> float:
        started = time.monotonic()
        assert await sender.reserve(SIZE)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sender.send(server.fileno(), fd, 0, SIZE), 60)
        return time.monotonic() - started

    try:
        assert asyncio.run(run()) < 30  # SO_SNDTIMEO, not the test's own 60 s bound
        assert sender.available(SIZE)
    finally:
        sender.close()
        os.close(fd)
        server.close()
        client.close()


@pytest.mark.parametrize("how", ["close", "cancel"])
def test_close_and_a_cancelled_handler_end_a_send_at_once(tmp_path: Path, how: str) -> None:
    _, fd = _file(tmp_path)
    server, client = _pair()
    sender = FileSender(1, send_timeout=600)  # only the shutdown can end it in time

    async def run() -> None:
        assert await sender.reserve(SIZE)
        task = asyncio.create_task(sender.send(server.fileno(), fd, 0, SIZE))
        while sender.available(SIZE):  # the thread took it
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        if how == "close":
            sender.close()
            with pytest.raises(OSError):
                await asyncio.wait_for(task, 30)
        else:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        deadline = time.monotonic() + 30
        while sender._sockets and time.monotonic() < deadline:  # the thread lets go
            await asyncio.sleep(0.01)
        assert not sender._sockets

    before = _open_fds()
    try:
        asyncio.run(run())
        assert _open_fds() <= before
    finally:
        sender.close()
        os.close(fd)
        server.close()
        client.close()


def test_no_more_sends_than_threads_and_small_bodies_stay_on_the_loop() -> None:
    async def run() -> None:
        sender = FileSender(1, wait=0)
        try:
            assert not await sender.reserve(THREAD_MIN_BYTES - 1)
            assert await sender.reserve(THREAD_MIN_BYTES)
            assert not sender.available(THREAD_MIN_BYTES)  # one send running
            assert not await sender.reserve(THREAD_MIN_BYTES)  # no wait: on the loop
            sender.release()
            assert sender.available(THREAD_MIN_BYTES)
            assert not await FileSender(0).reserve(SIZE)
        finally:
            sender.close()

    asyncio.run(run())


def test_a_big_body_waits_for_a_busy_thread_first_come_first_served() -> None:
    """Busy threads: the next bodies queue and get the thread in the order they came (without
    the wait they went to the loop, where every node shares it and all finish at the end)."""
    async def run() -> list[int]:
        sender = FileSender(1, wait=60)
        try:
            assert await sender.reserve(SIZE)
            granted: list[int] = []

            async def body(n: int) -> None:
                assert await sender.reserve(SIZE)
                granted.append(n)

            tasks = []
            for n in range(3):
                tasks.append(asyncio.create_task(body(n)))
                while sender.waiting <= n:  # queued in this order
                    await asyncio.sleep(0)
            for _ in range(3):
                sender.release()
                while len(granted) < len(tasks) - sender.waiting:
                    await asyncio.sleep(0)
            await asyncio.gather(*tasks)
            assert sender.waited == 3 and not sender.available(SIZE)
            sender.release()
            assert sender.available(SIZE)
            return granted
        finally:
            sender.close()

    assert asyncio.run(run()) == [0, 1, 2]


def test_the_wait_for_a_thread_is_bounded_and_a_cancelled_wait_leaves_the_queue() -> None:
    async def run() -> float:
        sender = FileSender(1, wait=0.3)
        try:
            assert await sender.reserve(SIZE)  # held by a client that never reads
            started = time.monotonic()
            assert not await sender.reserve(SIZE)  # on the loop after the wait
            waited = time.monotonic() - started
            assert sender.waiting == 0
            sender.wait = 60
            task = asyncio.create_task(sender.reserve(SIZE))
            while not sender.waiting:
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert sender.waiting == 0
            sender.release()  # nobody waits: the thread is idle again
            assert sender.available(SIZE)
            return waited
        finally:
            sender.close()

    assert 0.25 <= asyncio.run(run()) < 30


def test_close_sends_the_waiting_bodies_to_the_loop() -> None:
    async def run() -> bool:
        sender = FileSender(1, wait=600)
        assert await sender.reserve(SIZE)
        task = asyncio.create_task(sender.reserve(SIZE))
        while not sender.waiting:
            await asyncio.sleep(0)
        sender.close()
        return await asyncio.wait_for(task, 30)

    assert asyncio.run(run()) is False
