"""One HTTP worker process (serve/httpworkers.py says why and how): `HttpService` on the
inherited socket with the worker's own copy of the inventory, its events written to serve's
main process, and what only the main process has relayed to it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from typing import BinaryIO

import aiohttp
from aiohttp import web

from oneroot.model.events import BootEvent
from oneroot.serve.holder import CatalogHolder, watch_inventory
from oneroot.serve.http import HttpService
from oneroot.serve.httpworkers import READY, WorkerConfig, write_frame

log = logging.getLogger(__name__)

# Not passed on, either way (RFC 9110 7.6.1).
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                         "transfer-encoding", "upgrade"})
_ANSWER_SET_HERE = frozenset({"content-length", "date", "server"})


class Relay:
    """A request the worker has no route for, asked of serve's main process over its Unix
    socket (one kept-alive connection pool), its answer streamed back (the page's event
    stream included)."""

    def __init__(self, path: str) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=path), auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        body = await request.read()
        try:
            async with self._session.request(request.method, f"http://serve{request.rel_url}",
                                              headers=headers, data=body or None,
                                              allow_redirects=False) as upstream:
                answer = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for key, value in upstream.headers.items():
                    if key.lower() not in _HOP_BY_HOP | _ANSWER_SET_HERE:
                        answer.headers.add(key, value)
                if upstream.content_length is not None:
                    answer.content_length = upstream.content_length
                await answer.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await answer.write(chunk)
        except aiohttp.ClientError as exc:
            log.error("http.relay_failed path=%s error=%s", request.path[:256], exc)
            raise web.HTTPBadGateway(text="serve's main process did not answer\n") from None
        await answer.write_eof()
        return answer

    async def close(self) -> None:
        await self._session.close()


class _EventPipe:
    """The worker's events, each written whole to serve's main process before the node gets
    its answer (a report is recorded even when the worker dies right after)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def __call__(self, event: BootEvent) -> None:
        write_frame(self._stream, event)


async def run_worker(config: WorkerConfig, events: BinaryIO, parent: BinaryIO) -> None:
    """Serve until SIGTERM, or until `parent` (serve's end of our stdin) closes."""
    holder = CatalogHolder(config.paths, config.http_host, config.role)
    http = HttpService(bind=config.bind, port=config.port, boot_dir=config.boot_dir,
                       catalog=lambda: holder.catalog, on_event=_EventPipe(events),
                       status=None, limits=config.limits)
    relay = Relay(str(config.relay))
    http.app.router.add_route("*", "/{tail:.*}", relay)  # after every route of its own
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Ctrl-C reaches the whole process group: serve stops its workers itself
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    loop.add_signal_handler(signal.SIGHUP, lambda: holder.reload(force=True))  # serve's
    loop.add_reader(parent.fileno(), lambda: stop.set() if not os.read(parent.fileno(), 4096)
                    else None)
    await http.start(listen=socket.socket(fileno=config.listen_fd))
    write_frame(events, READY)
    watcher = asyncio.create_task(watch_inventory(holder, config.reload_interval))
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        await http.close()
        await relay.close()
        holder.close()
