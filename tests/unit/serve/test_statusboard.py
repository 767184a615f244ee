"""The status page's streams: bounded in number, and a browser that does not read is let go."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from ipaddress import IPv4Address
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from oneroot.inventory.events import EventStore
from oneroot.model.events import BootEvent
from oneroot.model.limits import DEFAULT_LIMITS
from oneroot.ops.timeline import Timeline
from oneroot.serve import statusboard
from oneroot.serve.app import _status_board
from oneroot.serve.events import EventRecorder
from oneroot.serve.holder import CatalogHolder
from oneroot.serve.statusboard import StatusBoard, add_page_routes
from oneroot.testing.postgres import StoreAt

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




def test_without_a_stream_an_event_builds_no_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """A boot storm sends ~20 events per node; with no browser following the page, none is
    turned into a node's JSON (it was, for nobody: 3% of serve's samples in bench/storm)."""
    def no_json(*args: object, **kwargs: object) -> str:
        raise AssertionError("JSON built for no stream")

    monkeypatch.setattr(statusboard.json, "dumps", no_json)
    b = board()
    b(BootEvent(time=1, kind="dhcp.ack", node="node01"))
    b(BootEvent(time=2, kind="stage", node="node01", stage="failed",
                detail={"status": "failed", "message": "no root"}))
    assert b.latest["node01"].stage == "failed"  # the page's state still follows
    assert [e["message"] for e in b.errors] == ["no root"]
    assert b.snapshot()["nodes"][0]["stage"] == "failed"  # type: ignore[index]


class CountingNodes(Mapping[str, Any]):
    """The catalog's nodes, counting every node entry read."""

    def __init__(self, count: int) -> None:
        self._nodes = {f"node{n:03d}": SimpleNamespace(node=SimpleNamespace(
            address=IPv4Address("10.0.0.0") + n)) for n in range(count)}
        self.reads = 0

    def __getitem__(self, name: str) -> Any:
        self.reads += 1
        return self._nodes[name]

    def __iter__(self) -> Iterator[str]:
        for name in self._nodes:
            self.reads += 1
            yield name

    def __len__(self) -> int:
        return len(self._nodes)


def test_an_event_reads_only_its_own_node(store_at: StoreAt) -> None:
    """The board used to rebuild every node's address on each event: O(N) per event, O(N²)
    per boot storm. Now an event costs its node's entry; the page's snapshot is unchanged."""
    nodes = CountingNodes(500)
    holder = cast(CatalogHolder, SimpleNamespace(cluster=SimpleNamespace(nodes=nodes)))
    store = EventStore(store_at("events"))
    recorder = EventRecorder(store, lambda ip: None)
    b = _status_board(holder, store, recorder, DEFAULT_LIMITS)
    nodes.reads = 0
    for n in range(10):
        b(BootEvent(time=1.0, kind="stage", node=f"node{n:03d}", stage="init"))
    assert nodes.reads <= 10 * 3
    snapshot = b.snapshot()["nodes"]
    assert isinstance(snapshot, list) and len(snapshot) == 500
    assert snapshot[7]["ip"] == "10.0.0.7" and snapshot[7]["stage"] == "init"
    assert snapshot[499] == {"node": "node499", "ip": "10.0.1.243", "stage": "never booted",
                             "time": None, "message": "", "timeline": Timeline().as_json()}
