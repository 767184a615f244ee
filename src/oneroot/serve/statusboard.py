"""The web status page's live state: each node's stage and boot timeline, recent errors, and
the server-sent-event streams that push them to browsers.

Everything here is built from boot events; names and messages a node controls travel as JSON
strings and the page puts them in the DOM as text (see web/status.js).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from ipaddress import IPv4Address

from aiohttp import web

from oneroot.model.events import BootEvent
from oneroot.ops.timeline import Timeline, advance, failure_hint

log = logging.getLogger(__name__)

ERRORS_KEPT = 50
STREAM_QUEUE = 256  # messages waiting for one browser; a slower one is disconnected
KEEPALIVE_SECONDS = 15.0
STATIC = {"status.js": "text/javascript", "status.css": "text/css",
          "status.html": "text/html"}
_ERROR_KINDS = ("tftp.error", "dhcp.nak")


class StatusBoard:
    """`board(event)` for every boot event; `stream(request)` serves a browser's SSE."""

    def __init__(self, nodes: Callable[[], Mapping[str, IPv4Address]], *, max_streams: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._nodes = nodes
        self._clock = clock
        self.max_streams = max_streams
        self.timelines: dict[str, Timeline] = {}
        self.latest: dict[str, BootEvent] = {}
        self.errors: deque[dict[str, object]] = deque(maxlen=ERRORS_KEPT)
        self._streams: set[asyncio.Queue[str | None]] = set()

    def seed(self, events: Iterable[BootEvent]) -> None:
        """Replay stored events (after a restart) without pushing them."""
        for event in events:
            self._apply(event)

    def __call__(self, event: BootEvent) -> None:
        node = event.node
        error = self._apply(event)
        if not self._streams:  # nobody follows the page: no JSON per event (a boot storm's)
            return
        if node is not None and node in self._nodes():
            self._push("node", self._node_json(node))
        if error is not None:
            self._push("failure", error)

    def record_error(self, *, node: str, message: str, hint: str | None) -> None:
        """An error the server met on a node's behalf (a failed power action)."""
        error = {"time": self._clock(), "node": node, "message": message, "hint": hint or ""}
        self.errors.append(error)
        self._push("failure", error)

    def _apply(self, event: BootEvent) -> dict[str, object] | None:
        node = event.node
        if node is None:
            return None
        if event.kind == "stage" or event.kind in ("dhcp.offer", "dhcp.ack", "tftp.done",
                                                   "http.done"):
            self.latest[node] = event
        self.timelines[node] = advance(self.timelines.get(node, Timeline()), event)
        message = None
        if event.kind == "stage" and event.stage == "failed":
            message = event.detail.get("message") or "failed"
        elif event.kind in _ERROR_KINDS:
            message = f"{event.kind} {event.file or ''} {event.detail.get('error', '')}".strip()
        if message is None:
            return None
        error = {"time": event.time, "node": node, "message": message,
                 "hint": failure_hint(message) if event.kind == "stage" else ""}
        self.errors.append(error)
        return error

    def _node_json(self, node: str) -> dict[str, object]:
        nodes = self._nodes()
        last = self.latest.get(node)
        timeline = self.timelines.get(node, Timeline())
        stage = "never booted"
        if last is not None:
            stage = last.stage if last.kind == "stage" and last.stage else last.kind
        return {"node": node, "ip": str(nodes[node]) if node in nodes else "",
                "stage": stage, "time": last.time if last else None,
                "message": last.detail.get("message", "") if last else "",
                "timeline": timeline.as_json()}

    def snapshot(self) -> dict[str, object]:
        return {"time": self._clock(), "nodes": [self._node_json(n) for n in self._nodes()],
                "errors": list(self.errors)}

    def close(self) -> None:
        """End every stream (before the listeners close: they wait for open handlers)."""
        for queue in list(self._streams):
            self._end(queue)

    def _end(self, queue: asyncio.Queue[str | None]) -> None:
        self._streams.discard(queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)

    def _push(self, kind: str, data: object) -> None:
        message = f"event: {kind}\ndata: {json.dumps(data)}\n\n"
        for queue in list(self._streams):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:  # a browser that does not read: let it go
                log.info("status.stream_dropped reason=queue full")
                self._end(queue)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        if len(self._streams) >= self.max_streams:
            log.warning("status.stream_refused peer=%s streams=%d", request.remote,
                        len(self._streams))
            raise web.HTTPServiceUnavailable(text="too many status streams (status_streams)\n")
        queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=STREAM_QUEUE)
        self._streams.add(queue)
        try:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-store"})
            await resp.prepare(request)
            await resp.write(f"event: snapshot\ndata: {json.dumps(self.snapshot())}\n\n"
                             .encode())
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    message = ": keepalive\n\n"
                if message is None:
                    break
                await resp.write(message.encode())
        finally:
            self._streams.discard(queue)
        return resp


def static_file(name: str) -> bytes:
    return resources.files("oneroot.serve").joinpath("web", name).read_bytes()


# The page may load nothing from elsewhere, and run no inline script.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def page_response(name: str) -> web.Response:
    if name not in STATIC:
        raise web.HTTPNotFound(text="not found\n")
    return web.Response(body=static_file(name), content_type=STATIC[name],
                        headers={"Content-Security-Policy": CSP,
                                 "X-Content-Type-Options": "nosniff",
                                 "Cache-Control": "no-store"})


def add_page_routes(app: web.Application, board: StatusBoard) -> None:
    """The page, its script and style, and the event stream (read-only)."""
    async def index(request: web.Request) -> web.Response:
        return page_response("status.html")

    async def static(request: web.Request) -> web.Response:
        return page_response(request.match_info["name"])

    app.add_routes([web.get("/", index), web.get("/static/{name}", static),
                    web.get("/api/v1/stream", board.stream)])
