"""The status page's streams: bounded in number, and a browser that does not read is let go."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from oneroot.model.events import BootEvent
from oneroot.serve import statusboard
from oneroot.serve.statusboard import StatusBoard, add_page_routes

NODES = {"node01": IPv4Address("10.0.0.11")}


def board(max_streams: int = 2) -> StatusBoard:
    return StatusBoard(lambda: NODES, max_streams=max_streams, clock=lambda: 100.0)


async def _client(b: StatusBoard) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    add_page_routes(app, b)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


def test_streams_beyond_the_limit_are_refused() -> None:
    async def run() -> None:
        b = board(max_streams=2)
        client = await _client(b)
        try:
            first = await client.get("/api/v1/stream")
            second = await client.get("/api/v1/stream")
            assert first.status == second.status == 200
            assert (await first.content.readuntil(b"\n\n")).startswith(b"event: snapshot")
            third = await client.get("/api/v1/stream")
            assert third.status == 503
            b(BootEvent(time=1, kind="stage", node="node01", stage="layers",
                        detail={"status": "ok", "reported": "layers"}))
            pushed = await first.content.readuntil(b"\n\n")
            assert pushed.startswith(b"event: node") and b'"stage": "layers"' in pushed
            b.close()
            ended = await asyncio.wait_for(second.content.read(), 5)  # ended, not hung
            assert ended.endswith(b"\n\n")
        finally:
            await client.close()

    asyncio.run(run())


def test_a_browser_that_does_not_read_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statusboard, "STREAM_QUEUE", 4)

    async def run() -> None:
        b = board()
        client = await _client(b)
        try:
            resp = await client.get("/api/v1/stream")
            await resp.content.readuntil(b"\n\n")
            await asyncio.sleep(0.05)  # the handler waits on its queue
            assert len(b._streams) == 1
            for i in range(40):  # without a read in between: the queue fills
                b(BootEvent(time=i, kind="dhcp.ack", node="node01"))
            assert len(b._streams) == 0
        finally:
            await client.close()

    asyncio.run(run())


def test_page_is_served_with_a_strict_policy() -> None:
    async def run() -> None:
        client = await _client(board())
        try:
            page = await client.get("/")
            assert "script-src 'self'" in page.headers["Content-Security-Policy"]
            assert "/static/status.js" in await page.text()
            assert (await client.get("/static/../admin.py")).status == 404
            assert (await client.get("/static/status.js")).status == 200
        finally:
            await client.close()

    asyncio.run(run())


