"""HttpService's boot files stat, open and close on the loop: no hop to the thread pool (each
hop is a GIL hand-off the loop waited milliseconds for in a boot storm on a busy machine).
Whole file, a Range and HEAD are answered as before; a conditional request (304) is left to
aiohttp. A big body is sent by a sendfile thread (serve/sendfile.py), and the connection
carries the next request after it; a client that does not read keeps its thread, never the
others' files. In process, on loopback."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from oneroot.model.events import BootEvent
from oneroot.model.limits import Limits
from oneroot.serve.http import HttpService
from oneroot.testing.ports import free_port

pytestmark = pytest.mark.integration


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


class NoVirtualFiles:
    def virtual_file(self, path: str) -> None:
        return None


async def _request(port: int, head: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + b"Connection: close\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def _serve(boot: Path, heads: list[str]) -> tuple[list[bytes], int, list[BootEvent]]:
    return await _serve_with(boot, heads, Limits())


async def _serve_with(boot: Path, heads: list[str], limits: Limits
                      ) -> tuple[list[bytes], int, list[BootEvent]]:
    executor = CountingExecutor()
    asyncio.get_running_loop().set_default_executor(executor)
    events: list[BootEvent] = []
    port = free_port()
    service = HttpService(bind="127.0.0.1", port=port, boot_dir=boot,
                          catalog=lambda: NoVirtualFiles(),  # type: ignore[arg-type,return-value]
                          on_event=events.append, status=dict, limits=limits)
    await service.start()
    try:
        before = executor.submitted
        answers = [await _request(port, head) for head in heads]
        return answers, executor.submitted - before, events
    finally:
        await service.close()


def _split(answer: bytes) -> tuple[str, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.decode(), body


def test_boot_files_need_no_thread(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    (tmp_path / "vmlinuz").write_bytes(data)
    answers, submitted, events = asyncio.run(_serve(tmp_path, [
        "GET /boot/vmlinuz HTTP/1.1\r\nHost: x\r\n",
        "GET /boot/vmlinuz HTTP/1.1\r\nHost: x\r\nRange: bytes=1000-1999\r\n",
        "HEAD /boot/vmlinuz HTTP/1.1\r\nHost: x\r\n",
    ]))
    (whole, whole_body), (part, part_body), (head, head_body) = map(_split, answers)
    assert whole.startswith("HTTP/1.1 200") and whole_body == data
    assert part.startswith("HTTP/1.1 206") and part_body == data[1000:2000]
    assert head.startswith("HTTP/1.1 200") and f"Content-Length: {len(data)}" in head
    assert head_body == b""
    assert submitted == 0
    assert [e.kind for e in events] == ["http.done", "http.done"]  # HEAD sends no file


def test_a_conditional_request_is_left_to_aiohttp(tmp_path: Path) -> None:
    (tmp_path / "vmlinuz").write_bytes(b"k" * 1000)
    (first, _), = map(_split, asyncio.run(_serve(tmp_path, [
        "GET /boot/vmlinuz HTTP/1.1\r\nHost: x\r\n"]))[0])
    etag = next(line.split(": ", 1)[1] for line in first.split("\r\n")
                if line.lower().startswith("etag:"))
    answers, _, _ = asyncio.run(_serve(tmp_path, [
        f"GET /boot/vmlinuz HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n"]))
    assert _split(answers[0])[0].startswith("HTTP/1.1 304")


BIG = 3 << 20  # above serve/sendfile.THREAD_MIN_BYTES


async def _read_response(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)).decode()
    length = int(next(line.split(": ", 1)[1] for line in head.split("\r\n")
                      if line.lower().startswith("content-length:")))
    return head, await asyncio.wait_for(reader.readexactly(length), 60)


def test_a_big_body_comes_from_a_thread_and_the_connection_goes_on(tmp_path: Path) -> None:
    data = os.urandom(BIG)
    (tmp_path / "vmlinuz").write_bytes(data)

    async def run() -> tuple[list[tuple[str, bytes]], int, int]:
        port = free_port()
        service = HttpService(bind="127.0.0.1", port=port, boot_dir=tmp_path,
                              catalog=lambda: NoVirtualFiles(),  # type: ignore[arg-type,return-value]
                              on_event=lambda e: None, status=dict)
        await service.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            answers = []
            for extra in ("", "Range: bytes=1000-2000999\r\n", ""):  # one kept-alive connection
                writer.write(f"GET /boot/vmlinuz HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
                answers.append(await _read_response(reader))
            writer.close()
            return answers, service.sender.files, service.sender.threads
        finally:
            await service.close()

    answers, by_thread, threads = asyncio.run(run())
    assert threads == Limits().http_sendfile_threads > 0
    (whole, whole_body), (part, part_body), (again, again_body) = answers
    assert whole.startswith("HTTP/1.1 200") and whole_body == data
    assert part.startswith("HTTP/1.1 206") and part_body == data[1000:2001000]
    assert again.startswith("HTTP/1.1 200") and again_body == data
    assert by_thread == 3


@asynccontextmanager
async def _thread_taken(tmp_path: Path, wait: float) -> AsyncIterator[
        tuple[HttpService, asyncio.StreamReader, Callable[[], Awaitable[asyncio.StreamReader]]]]:
    """A service with one sendfile thread, taken by a first client's `vmlinuz` that the client
    does not read yet; yields the service, that client's reader and a function that sends the
    same request on a new connection (its reader)."""
    port = free_port()
    service = HttpService(bind="127.0.0.1", port=port, boot_dir=tmp_path,
                          catalog=lambda: NoVirtualFiles(),  # type: ignore[arg-type,return-value]
                          on_event=lambda e: None, status=dict,
                          limits=Limits(http_sendfile_threads=1, http_sendfile_wait=wait))
    await service.start()
    writers: list[asyncio.StreamWriter] = []

    async def request() -> asyncio.StreamReader:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        writer.write(b"GET /boot/vmlinuz HTTP/1.1\r\nHost: x\r\n\r\n")
        return reader

    try:
        first = await request()
        deadline = asyncio.get_running_loop().time() + 30
        while service.sender.available(BIG):  # the thread took the first client's file
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        yield service, first, request
    finally:
        for writer in writers:
            writer.close()
        await service.close()


def test_a_client_that_does_not_read_keeps_only_its_own_thread(tmp_path: Path) -> None:
    """One sendfile thread, held by a client that never reads: another node's kernel still
    comes, on the loop after `http_sendfile_wait` (an unbounded wait would have stalled it)."""
    data = os.urandom(BIG * 8)  # more than loopback buffers: the thread's send blocks
    (tmp_path / "vmlinuz").write_bytes(data)

    async def run() -> tuple[bytes, int]:
        async with _thread_taken(tmp_path, wait=0.5) as (service, _, request):
            _, body = await _read_response(await request())
            return body, service.sender.files

    body, by_thread = asyncio.run(run())
    assert body == data
    assert by_thread == 0  # the stuck one never finished; the other was sent on the loop


def test_a_big_body_waits_for_the_busy_thread_instead_of_the_loop(tmp_path: Path) -> None:
    """One sendfile thread, busy with a client that reads late: the next node's kernel waits
    for that thread (and comes from it) rather than going to the event loop at once."""
    data = os.urandom(BIG * 8)  # more than loopback buffers: the first send blocks
    (tmp_path / "vmlinuz").write_bytes(data)

    async def run() -> tuple[bytes, bytes, int, int]:
        async with _thread_taken(tmp_path, wait=120) as (service, slow, request):
            reader = await request()
            deadline = asyncio.get_running_loop().time() + 30
            while not service.sender.waiting:  # the second body waits for the thread
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
            _, first = await _read_response(slow)  # the thread is free again
            _, second = await _read_response(reader)
            return first, second, service.sender.files, service.sender.waited

    first, second, by_thread, waited = asyncio.run(run())
    assert first == data and second == data
    assert (by_thread, waited) == (2, 1)  # without the wait: 1 by thread, the other on the loop
