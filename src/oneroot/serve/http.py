"""HTTP for iPXE and the initramfs: boot files (sendfile, Range), per-node scripts, stage
reports and the status API — on aiohttp."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any, Protocol, cast
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.hdrs import ACCEPT_ENCODING

from oneroot.model.checks import checks_text
from oneroot.model.events import (
    BOOT_IMAGE,
    CHECK_EVENT,
    REPORTED_STAGES,
    STAGE_STATUSES,
    BootEvent,
)
from oneroot.model.limits import DEFAULT_LIMITS, Limits
from oneroot.ops.catalog import CHECKS_PATH, REPORT_PATH, BootCatalog
from oneroot.serve.sendfile import FileSender
from oneroot.serve.statusboard import StatusBoard, add_page_routes

log = logging.getLogger(__name__)

MAX_PATH = 1024
# Connections the kernel queues before serve accepts them. aiohttp's default, 128,
# is below a rack powering on at once: a node whose SYN is dropped waits 1 s, 3 s, ... to retry.
LISTEN_BACKLOG = 1024
NAME_MAX = 255  # bytes in one path component (Linux): a longer one fails lstat with ENAMETOOLONG
# A node's report equal to its previous one, this soon after it, is a retry (the node saw no
# answer: 3 tries, 5 s each, 1 and 2 s apart), not news. A new boot reports `dhcp` first, or
# fetches its boot script (which forgets the last report) before the same report comes again.
REPORT_REPEAT_SECONDS = 30.0
_REPORTS = ("stage", CHECK_EVENT)


def resolve_in_root(root: Path, name: str) -> Path | None:
    """The file `name` names under `root`, or None when it would leave the root.

    Refuses `..`, NUL bytes, over-long names and components, and symlinks whose target is
    outside the root.
    """
    if not name or "\0" in name or len(name) > MAX_PATH or "\\" in name:
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." or len(os.fsencode(p)) > NAME_MAX for p in parts):
        return None
    real_root = os.path.realpath(root)
    candidate = os.path.realpath(os.path.join(real_root, *parts))
    if os.path.commonpath([real_root, candidate]) != real_root:
        return None
    path = Path(candidate)
    return path if path.is_file() else None


def _peer(request: web.Request) -> ipaddress.IPv4Address | None:
    try:  # not ip_address(): it tries IPv4, then IPv6, at every request
        return ipaddress.IPv4Address(request.remote or "")
    except ValueError:
        return None


class _ReportingFileResponse(web.FileResponse):
    """A FileResponse (sendfile, Range, HEAD) that reports when the file has been sent, and
    stats, opens and closes its file on the loop.

    aiohttp does those three in its thread pool. A boot file is a local regular file, so each
    takes microseconds, while each hop to the pool is a GIL hand-off: on a busy machine the
    loop waited milliseconds for the GIL per hop (py-spy in a boot storm, bench/storm), four
    hops per node. Where this aiohttp lacks the two methods used here, or the answer is not
    the file (304, 412, 403), aiohttp's own `prepare` answers."""

    def __init__(self, path: Path, on_sent: Callable[[web.StreamResponse], None],
                 sender: FileSender | None = None) -> None:
        super().__init__(path, chunk_size=256 * 1024)
        self._on_sent = on_sent
        self._sender = sender

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        writer = await self._prepare_on_loop(request)
        if request.method != "HEAD":
            self._on_sent(self)
        return writer

    async def _prepare_on_loop(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        make = getattr(self, "_make_response", None)
        send_open = getattr(self, "_prepare_open_file", None)
        if make is None or send_open is None:
            return await super().prepare(request)
        try:
            _, fobj, st, encoding = make(request, request.headers.get(ACCEPT_ENCODING, "").lower())
        except OSError:  # gone since it was resolved: aiohttp's 403/404
            fobj = None
        if fobj is None:
            return await super().prepare(request)
        try:
            return cast("AbstractStreamWriter | None", await send_open(request, fobj, st,
                                                                       encoding))
        finally:
            fobj.close()

    async def _sendfile(self, request: web.BaseRequest, fobj: IO[Any], offset: int,
                        count: int) -> AbstractStreamWriter:
        """The body from a thread of the sender's (serve/sendfile.py) when it is big and one is
        free or frees up within the sender's wait, and the head has left the transport; else
        aiohttp's sendfile on the loop."""
        sender, transport = self._sender, request.transport
        if sender is None or transport is None or self.compression or \
                transport.get_extra_info("socket") is None or not await sender.reserve(count):
            return await super()._sendfile(request, fobj, offset, count)
        try:
            writer = await web.StreamResponse.prepare(self, request)  # the head, sent at once
            head_queued = transport.get_write_buffer_size() or transport.is_closing()
        except BaseException:
            sender.release()
            raise
        assert writer is not None
        if head_queued:  # the loop must send the rest of the head before the body
            sender.release()
            return await super()._sendfile(request, fobj, offset, count)
        reading = transport.is_reading()
        transport.pause_reading()  # nothing else uses the socket while the thread sends
        try:
            await sender.send(transport.get_extra_info("socket").fileno(), fobj.fileno(),
                              offset, count)
        except BaseException as exc:
            transport.abort()  # a short body: the connection cannot carry another answer
            if isinstance(exc, OSError):
                raise ConnectionResetError(f"boot file body: {exc}") from exc
            raise
        if reading:
            transport.resume_reading()
        await web.StreamResponse.write_eof(self)
        return writer


def _checked_report(data: dict[str, str], limits: Limits) -> tuple[str, str, str]:
    """Stage, status and message of a report, or HTTP 400: known stage and status names,
    a message of printable text (newlines and tabs become spaces) cut to its limit."""
    stage = data.get("stage", "")
    if stage not in REPORTED_STAGES:
        raise web.HTTPBadRequest(
            text=f"unknown stage; one of {' '.join(REPORTED_STAGES)}\n")
    status = data.get("status", "ok")
    if status not in STAGE_STATUSES:
        raise web.HTTPBadRequest(text=f"unknown status; one of {' '.join(STAGE_STATUSES)}\n")
    return stage, status, _checked_message(data, limits)


def _checked_message(data: dict[str, str], limits: Limits) -> str:
    message = data.get("message", "")[:limits.stage_message_text]
    message = message.replace("\r\n", " ").replace("\n", " ").replace("\t", " ")
    if not message.isprintable():
        raise web.HTTPBadRequest(text="message must be printable text\n")
    return message


def _checked_check(data: dict[str, str], limits: Limits, declared: int) -> dict[str, str]:
    """A check result's detail, or HTTP 400: the index of a check the server gave this node
    (so a node records at most its declared checks), a known status, a bounded message."""
    index = data.get("check", "")
    if not (index.isascii() and index.isdigit() and len(index) <= 4 and
            int(index) < declared):
        raise web.HTTPBadRequest(text=f"unknown check; this node has {declared}\n")
    status = data.get("status", "")
    if status not in STAGE_STATUSES:
        raise web.HTTPBadRequest(text=f"unknown status; one of {' '.join(STAGE_STATUSES)}\n")
    return {"check": str(int(index)), "status": status,
            "message": _checked_message(data, limits)}


async def _report_form(request: web.Request) -> dict[str, str]:
    """A report's fields: a JSON object or a form (the initramfs's wget, report-booted).

    The urlencoded form every node sends is parsed here, not by `request.post()` (a multidict
    and a charset lookup per report: the most frequent request of a boot storm); a field given
    twice keeps its last value, as before. Other forms go through aiohttp."""
    content_type = request.content_type
    if content_type == "application/json":
        try:
            return {str(k): str(v) for k, v in (await request.json()).items()}
        except (ValueError, AttributeError):
            raise web.HTTPBadRequest(text="body is not a JSON object\n") from None
    if content_type != "application/x-www-form-urlencoded":
        return {k: str(v) for k, v in (await request.post()).items()}
    return dict(parse_qsl((await request.read()).decode(errors="replace"),
                          keep_blank_values=True))


class Payloads(Protocol):
    """Boot files shared with other servers (`serve.replication`)."""

    def path_for(self, sha256: str) -> Path | None: ...

    def ensure(self, name: str) -> Awaitable[bool]: ...


class HttpService:
    def __init__(self, *, bind: str, port: int, boot_dir: Path,
                 catalog: Callable[[], BootCatalog], on_event: Callable[[BootEvent], None],
                 status: Callable[[], dict[str, object]] | None,
                 limits: Limits = DEFAULT_LIMITS, board: StatusBoard | None = None,
                 payloads: Payloads | None = None) -> None:
        self.bind, self.port, self.boot_dir = bind, port, boot_dir
        self._limits = limits
        self._payloads = payloads
        self._catalog, self._on_event, self._status = catalog, on_event, status
        self.app = web.Application(client_max_size=64 * 1024)
        self.app.add_routes([
            web.get("/boot/{path:.*}", self.boot_file),
            web.post(REPORT_PATH, self.report),
            web.get(CHECKS_PATH, self.checks),
            web.get("/healthz", self.health),
        ])
        if status is not None:  # else (an HTTP worker) relayed to serve's main process
            self.app.add_routes([web.get("/api/v1/status", self.status)])
        if board is not None:  # the page and its stream: read-only, no power buttons here
            add_page_routes(self.app, board)
        if payloads is not None:  # other servers fetch boot files here, by content hash
            self.app.add_routes([web.get("/payload/{sha256}", self.payload)])
        self._runner: web.AppRunner | None = None
        self.sender = FileSender(limits.http_sendfile_threads,
                                 wait=limits.http_sendfile_wait)

    async def start(self, *, listen: socket.socket | None = None,
                    relay: Path | None = None) -> None:
        """Answer on `bind`:`port`; or on the socket `listen` (an HTTP worker); or only on
        the Unix socket `relay`, for the HTTP workers (serve/httpworkers.py): a request
        relayed there has no node address, so whatever a node may ask for itself (scripts,
        reports, checks) is answered by the worker."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site: web.BaseSite
        if relay is not None:
            site = web.UnixSite(self._runner, str(relay))
        elif listen is not None:
            site = web.SockSite(self._runner, listen)
        else:
            site = web.TCPSite(self._runner, self.bind, self.port, reuse_address=True,
                               backlog=LISTEN_BACKLOG)
        await site.start()
        log.info("http.listening bind=%s port=%d%s", self.bind, self.port,
                 f" relay={relay}" if relay is not None else "")

    async def close(self) -> None:
        self.sender.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def boot_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["path"]
        started = time.monotonic()
        peer = _peer(request)
        virtual = self._catalog().virtual_file(name)

        def done(resp: web.StreamResponse, size: int, node: str | None) -> None:
            duration = time.monotonic() - started
            log.info("http.done peer=%s file=%s status=%d bytes=%d seconds=%.3f", peer, name,
                     resp.status, size, duration)
            self._on_event(BootEvent(time=time.time(), kind="http.done", node=node, peer=peer,
                                     file=name, bytes=size, duration=duration,
                                     detail={"status": str(resp.status)}))

        if virtual is not None:
            resp = web.Response(body=virtual.data, content_type="text/plain")
            done(resp, len(virtual.data), virtual.node)
            if virtual.node is not None and virtual.image is not None:
                self._on_event(BootEvent(time=time.time(), kind=BOOT_IMAGE, node=virtual.node,
                                         peer=peer, file=name,
                                         detail={"image": virtual.image}))
            return resp
        path = resolve_in_root(self.boot_dir, name)
        if path is None and self._payloads is not None and len(name) <= MAX_PATH and \
                await self._payloads.ensure(name):  # another server has it: fetched first
            path = resolve_in_root(self.boot_dir, name)
        if path is None:
            log.info("http.refused peer=%s path=%r", peer, name[:MAX_PATH])
            raise web.HTTPNotFound(text="not found\n")
        return _ReportingFileResponse(path, lambda r: done(r, r.content_length or 0, None),
                                      self.sender)

    async def payload(self, request: web.Request) -> web.StreamResponse:
        """A boot file by its SHA-256, for another server: only files of the boot directory's
        index (regular files, not links), whatever the hash names."""
        assert self._payloads is not None
        found = self._payloads.path_for(request.match_info["sha256"])
        path = None if found is None else resolve_in_root(
            self.boot_dir, str(found.relative_to(self.boot_dir)))
        if path is None:
            raise web.HTTPNotFound(text="not found\n")
        return web.FileResponse(path, chunk_size=256 * 1024)

    async def report(self, request: web.Request) -> web.Response:
        """A stage report from a node's initramfs: `stage=layers&status=ok&message=…`.

        Nodes send a report again when they saw no answer (90-report, report-booted): each
        try is answered, and `RepeatedReports` in front of serve's recorder records it once
        (the tries may reach different HTTP workers)."""
        peer = _peer(request)
        data = await _report_form(request)
        catalog = self._catalog()
        node = self._reporter(catalog, peer)
        if "check" in data:
            detail = _checked_check(data, self._limits,
                                    len(catalog.cluster.nodes[node].profile.checks))
            log.info("check.report node=%s check=%s status=%s", node, detail["check"],
                     detail["status"])
            self._on_event(BootEvent(time=time.time(), kind=CHECK_EVENT, node=node, peer=peer,
                                     detail=detail))
            return web.Response(text="ok\n")
        stage, status, message = _checked_report(data, self._limits)
        detail = {"status": status}
        if message:
            detail["message"] = message
        kind_stage = "failed" if status == "failed" else stage
        log.info("stage.report node=%s stage=%s status=%s", node, stage, status)
        self._on_event(BootEvent(time=time.time(), kind="stage", node=node, peer=peer,
                                 stage=kind_stage, detail={**detail, "reported": stage}))
        return web.Response(text="ok\n")

    @staticmethod
    def _reporter(catalog: BootCatalog, peer: ipaddress.IPv4Address | None) -> str:
        """The node at `peer`: only addresses in the inventory may report or read their
        checks, each for itself (the name comes from the address, never from the request)."""
        node = catalog.by_address.get(peer) if peer else None
        if node is None:
            log.info("stage.refused peer=%s reason=unknown address", peer)
            raise web.HTTPForbidden(text="unknown node address\n")
        return node

    async def checks(self, request: web.Request) -> web.Response:
        """The checks the asking node runs at its runlevel (`model.checks`' wire form)."""
        catalog = self._catalog()
        node = self._reporter(catalog, _peer(request))
        return web.Response(text=checks_text(catalog.cluster.nodes[node].profile.checks))

    async def status(self, request: web.Request) -> web.Response:
        assert self._status is not None
        return web.json_response(self._status())


class RepeatedReports:
    """`on_event` for serve's HTTP: the events on to `record` (serve's recorder), but a node's
    report (a stage or a check) equal to the one it sent last, again within
    `REPORT_REPEAT_SECONDS`: a retry whose answer was lost, recorded once. It runs in serve's
    main process, where every HTTP worker's events arrive, so the tries of one report are
    compared whichever workers took them. A node's own boot file served (an `http.done`
    naming the node: its boot script) begins a new boot, whose reports are news again. One
    entry per node: only inventory nodes report."""

    def __init__(self, record: Callable[[BootEvent], None], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._record = record
        self._clock = clock
        self._last: dict[str, tuple[tuple[Any, ...], float]] = {}  # node -> report, when

    def __call__(self, event: BootEvent) -> None:
        node = event.node
        if node is not None:
            if event.kind == "http.done":
                self._last.pop(node, None)
            elif event.kind in _REPORTS and self._repeated(node, event):
                return
        self._record(event)

    def _repeated(self, node: str, event: BootEvent) -> bool:
        report = (event.kind, event.stage, tuple(sorted(event.detail.items())))
        now = self._clock()
        last = self._last.get(node)
        self._last[node] = (report, now)
        if last is None or last[0] != report or now - last[1] > REPORT_REPEAT_SECONDS:
            return False
        log.info("stage.repeated node=%s report=%s", node, event.stage or event.kind)
        return True
