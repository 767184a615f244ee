"""HTTP worker processes: serve's HTTP answered outside the process that runs DHCP and TFTP.

In a boot storm each node opens ~9 HTTP connections (its script, kernel, initramfs, 6 stage
reports), and in one asyncio process each costs ~330 µs of Python for the connection alone
(accept, transport, aiohttp's request and response, close: bench/storm/profile_http.py), on
the same loop that answers every DHCP and TFTP packet. With `http_workers` = N > 0:

- serve's main process binds the HTTP socket and hands it to N worker processes
  (`python -m oneroot.cli.httpworker`), which all accept from its one queue, as nginx's
  workers do; the main process accepts none. A worker that dies loses only the connections
  it had accepted: the others wait in the kernel's queue for its successor.
- each worker loads the inventory itself (and reloads it as serve does), and answers boot
  files, per-node scripts, stage reports, checks and /healthz with `HttpService`, the same
  code as in-process; its events (`http.done`, `stage`, ...) come back to the main process
  over a pipe, in order, before the node has its answer, and are recorded there.
- what lives in the main process only (the status API and page, its event stream) is relayed
  to the main process's `HttpService` over a Unix socket (`serve.httpworker.Relay`). Those
  requests carry no node address there, so a route that acts for the node asking is
  answered by the worker itself (a relayed one would see no node: 403, never another's).
  The socket is HOME/run/http/serve-PID.sock, in a directory only serve's user enters; one
  a killed serve left is removed when a serve starts on that home again (only one whose
  serve is gone: a running serve's is kept).

A worker that exits is started again (logged at error); one that cannot start — its
first answer missing `START_TIMEOUT` seconds after it was spawned, `MAX_FAILED_STARTS` times
in a row — stops serve with an error: HTTP is never silently gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import pickle
import re
import signal
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from oneroot.errors import OnerootError
from oneroot.model.events import BootEvent
from oneroot.model.limits import Limits
from oneroot.model.paths import Paths
from oneroot.model.server import ServerRole
from oneroot.serve.http import LISTEN_BACKLOG, HttpService

log = logging.getLogger(__name__)

WORKER_COMMAND = (sys.executable, "-m", "oneroot.cli.httpworker")
START_TIMEOUT = 60.0  # seconds from spawn to the worker's "ready" (imports, inventory load)
STOP_TIMEOUT = 5.0  # seconds a stopping worker gets before SIGKILL
MAX_FAILED_STARTS = 3  # workers in a row that died before they were ready: serve stops
RESTART_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)  # before the 1st, 2nd, ... restart in a row
READY = "ready"
# The pipes: frames, each its length, then its body. Worker to serve: JSON, READY first, then
# its events (`event_json`). Serve to worker: one, its WorkerConfig pickled (serve's own).
_FRAME = struct.Struct("!I")
_JSON = json.JSONEncoder(separators=(",", ":"))  # one, not one per event (json.dumps' own)
RELAY_DIR = "http"  # under serve's run dir: the relay sockets, one per serve
_RELAY_SOCKET = re.compile(r"serve-([0-9]{1,10})\.sock")  # named by its serve's PID


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerConfig:
    """What a worker needs to serve as serve's own HttpService would; sent on its stdin."""

    paths: Paths
    http_host: str | None
    role: ServerRole
    boot_dir: Path
    bind: str
    port: int
    limits: Limits
    relay: Path  # the main process's Unix socket
    listen_fd: int  # the HTTP socket, inherited
    # The relay's directory, inherited: `relay` names the socket through it (/proc/self/fd/N/
    # NAME), as a deep home would make the path longer than a socket address may be (107).
    relay_dir_fd: int | None = None
    reload_interval: float
    log_level: str


def event_json(event: BootEvent) -> bytes:
    """`event` as the worker writes it: a JSON array of its fields in order, its peer as an
    integer (parsed back without a string's parsing)."""
    peer = None if event.peer is None else int(event.peer)
    detail = event.detail if type(event.detail) is dict else dict(event.detail)
    return _JSON.encode([event.time, event.kind, event.node, event.mac, peer, event.stage,
                         event.file, event.bytes, event.duration, detail,
                         event.server]).encode()


def json_event(data: bytes) -> BootEvent | str:
    """A worker's frame: an event (`event_json`), or a word (READY)."""
    value = json.loads(data)
    if isinstance(value, str):
        return value
    time, kind, node, mac, peer, stage, file, size, duration, detail, server = value
    return BootEvent(time=time, kind=kind, node=node, mac=mac,
                     peer=None if peer is None else ipaddress.IPv4Address(peer), stage=stage,
                     file=file, bytes=size, duration=duration, detail=detail, server=server)


def write_frame(stream: BinaryIO, message: BootEvent | str) -> None:
    """A worker's event, or READY, to serve."""
    data = event_json(message) if isinstance(message, BootEvent) else json.dumps(message).encode()
    stream.write(_FRAME.pack(len(data)) + data)
    stream.flush()


async def _read_frame(reader: asyncio.StreamReader) -> BootEvent | str:
    (size,) = _FRAME.unpack(await reader.readexactly(_FRAME.size))
    return json_event(await reader.readexactly(size))


def _config_frame(config: WorkerConfig) -> bytes:
    data = pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL)
    return _FRAME.pack(len(data)) + data


def read_config(stream: BinaryIO) -> WorkerConfig | None:
    """The worker's configuration, on its stdin; None if that is not what came."""
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (size,) = _FRAME.unpack(head)
    config = pickle.loads(stream.read(size))
    return config if isinstance(config, WorkerConfig) else None


def listen_socket(bind: str, port: int, backlog: int) -> socket.socket:
    """The HTTP socket every worker accepts from (inherited: not close-on-exec)."""
    sock = socket.create_server((bind, port), backlog=backlog)
    sock.set_inheritable(True)
    return sock


class HttpWorkers:
    """`await workers.start()`, then `run()` as a serve job until `close()`."""

    def __init__(self, config: WorkerConfig, sock: socket.socket, count: int,
                 on_event: Callable[[BootEvent], None],
                 command: tuple[str, ...] = WORKER_COMMAND,
                 after_close: Callable[[], Awaitable[None]] | None = None) -> None:
        assert sock.fileno() == config.listen_fd
        self._config, self._sock, self._count, self._on_event = config, sock, count, on_event
        self._command, self._after_close = command, after_close
        self._procs: list[asyncio.subprocess.Process | None] = [None] * count
        self._ready: set[int] = set()  # pids of workers that answered ready (SIGHUP is safe)
        self._closing = False

    async def start(self) -> None:
        """Every worker started and ready, or OnerootError."""
        for slot in range(self._count):
            await self._spawn(slot)

    async def _spawn(self, slot: int) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *self._command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            pass_fds=(self._config.listen_fd,) + (
                () if self._config.relay_dir_fd is None else (self._config.relay_dir_fd,)))
        self._procs[slot] = proc
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(_config_frame(self._config))  # stdin stays open: EOF = serve gone
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await proc.stdin.drain()
                ready = await _read_frame(proc.stdout)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
            await self._stop(proc)
            raise OnerootError(
                f"the HTTP worker (pid {proc.pid}) did not start: exit status "
                f"{proc.returncode} ({type(exc).__name__})",
                hint="its error is above; `oneroot serve --limit http_workers=0` answers HTTP "
                     "in serve's own process") from None
        if ready != READY:
            await self._stop(proc)
            raise OnerootError(f"the HTTP worker (pid {proc.pid}) said {ready!r}, not ready")
        self._ready.add(proc.pid)
        log.info("http.worker_started slot=%d pid=%d", slot, proc.pid)
        return proc

    def reload(self) -> None:
        """Every ready worker reloads the inventory now (serve did: SIGHUP, a change)."""
        for proc in self._procs:
            if proc is not None and proc.pid in self._ready and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGHUP)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for slot in range(self._count):
                group.create_task(self._supervise(slot))

    async def _supervise(self, slot: int) -> None:
        """Hand the worker's events to the recorder; start it again when it exits."""
        failed_starts = 0
        while True:
            proc = self._procs[slot]
            assert proc is not None and proc.stdout is not None
            with contextlib.suppress(asyncio.IncompleteReadError):
                while True:
                    event = await _read_frame(proc.stdout)
                    if isinstance(event, BootEvent):
                        self._on_event(event)
                    else:  # a word out of turn (only READY is one): a bug, said
                        log.error("http.worker_frame slot=%d pid=%d frame=%.80r not an event",
                                  slot, proc.pid, event)
            status = await proc.wait()
            self._ready.discard(proc.pid)
            # first the delay: when serve itself is stopping (a SIGTERM to the whole group),
            # this task is cancelled here, and no worker's exit is reported as a death
            await asyncio.sleep(RESTART_DELAYS[min(failed_starts, len(RESTART_DELAYS) - 1)])
            if self._closing:
                return
            log.error("http.worker_died slot=%d pid=%d status=%d restarting", slot, proc.pid,
                      status)
            try:
                await self._spawn(slot)
            except OnerootError as exc:
                failed_starts += 1
                if failed_starts >= MAX_FAILED_STARTS:
                    raise
                log.error("http.worker_start_failed slot=%d error=%s", slot, exc)
                continue
            failed_starts = 0

    async def _stop(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def close(self) -> None:
        self._closing = True
        await asyncio.gather(*(self._stop(p) for p in self._procs if p is not None))
        self._sock.close()
        if self._after_close is not None:
            await self._after_close()


def open_relay_dir(paths: Paths) -> int:
    """HOME/run/http (made, 0700, serve's user's), open; the relay sockets in it whose serve is
    gone removed (a serve killed with SIGKILL leaves its own). A socket whose PID runs is kept:
    another serve on this home, or a PID reused since (left for a later start)."""
    directory = paths.run_dir / RELAY_DIR
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        owner = os.fstat(fd).st_uid
        if owner != os.geteuid():
            raise OnerootError(f"{directory} belongs to uid {owner}, not to serve's user",
                               hint=f"remove {directory}: serve makes it again")
        os.fchmod(fd, 0o700)
        for name in os.listdir(fd):
            found = _RELAY_SOCKET.fullmatch(name)
            if found is not None and not _running(int(found[1])):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=fd)
                log.info("http.relay_removed socket=%s reason=its serve is gone",
                         directory / name)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


async def start_http_workers(http: HttpService, *, paths: Paths, http_host: str | None,
                             role: ServerRole, limits: Limits, reload_interval: float,
                             on_event: Callable[[BootEvent], None]) -> HttpWorkers:
    """`limits.http_workers` workers started and ready on `http`'s address; `http` (serve's
    own, with the status page) answers on a Unix socket in a directory only serve's user
    enters (`open_relay_dir`)."""
    relay_dir = open_relay_dir(paths)
    name = f"serve-{os.getpid()}.sock"

    async def close_http() -> None:
        await http.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=relay_dir)
        os.close(relay_dir)

    relay = Path(f"/proc/self/fd/{relay_dir}/{name}")
    try:
        await http.start(relay=relay)
    except BaseException:
        await close_http()
        raise
    log.info("http.relay socket=%s", paths.run_dir / RELAY_DIR / name)
    sock = listen_socket(http.bind, http.port, LISTEN_BACKLOG)
    config = WorkerConfig(paths=paths, http_host=http_host, role=role, boot_dir=http.boot_dir,
                          bind=http.bind, port=http.port, limits=limits, relay=relay,
                          listen_fd=sock.fileno(), reload_interval=reload_interval,
                          log_level=logging.getLevelName(logging.getLogger().level),
                          relay_dir_fd=relay_dir)
    workers = HttpWorkers(config, sock, limits.http_workers, on_event, after_close=close_http)
    try:
        await workers.start()
    except BaseException:
        await workers.close()
        raise
    return workers
