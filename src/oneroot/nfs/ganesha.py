"""nfs-ganesha, run and supervised from asyncio; and its config with masked views.

    server = GaneshaServer(GaneshaFiles.in_dir(run_dir), config=text, bind=addr, port=2049)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(server.run())          # start, wait for the port, restart on crash
        await server.wait_ready()
        ...
        await server.reload(new_text)         # exports only: SIGHUP; core params: restart
    # cancelling run() stops ganesha (SIGTERM, then SIGKILL)

Facts this relies on, measured with ganesha 4.3 here: `ganesha.nfsd -F` stays in the
foreground; SIGHUP re-reads the EXPORT blocks ("Reread exports complete" in the log) and adds,
removes and updates exports — including a junction into a new node's directory — but not
NFS_CORE_PARAM (bind address, port, protocols), which needs a restart. A restart without
`Graceless = true` would make clients wait out a grace period; the rendered config sets it.
NFSv3 needs rpcbind (ganesha exits `Cannot register NFS V3` without it): oneroot defaults to
NFSv4 only, which needs nothing else (the `Cannot register NFS V4` log line is harmless).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from oneroot.errors import ConfigError, ExternalToolError, OnerootError
from oneroot.fsutil import write_if_changed
from oneroot.render.cluster import render_ganesha, with_views
from oneroot.render.context import ClusterContext

log = logging.getLogger(__name__)

_EXPORT_BLOCK = re.compile(r"^(?:# [^\n]*\n)?EXPORT \{\n.*?^\}\n", re.MULTILINE | re.DOTALL)


class ReloadAction(enum.StrEnum):
    UNCHANGED = "unchanged"
    RELOADED = "reloaded"  # SIGHUP: exports re-read, clients keep their state
    RESTARTED = "restarted"  # core parameters changed


@dataclass(frozen=True, slots=True, kw_only=True)
class GaneshaFiles:
    conf: Path
    log: Path
    pid: Path

    @classmethod
    def in_dir(cls, directory: Path) -> GaneshaFiles:
        return cls(conf=directory / "ganesha.conf", log=directory / "ganesha.log",
                   pid=directory / "ganesha.pid")


@dataclass(frozen=True, slots=True, kw_only=True)
class GaneshaStatus:
    pid: int | None
    ready: bool
    starts: int
    last_exit: int | None


def render_config(ctx: ClusterContext, views: Mapping[str, Path]) -> str:
    """The ganesha config with each image in `views` exported from its masked view.

    The view's directory is the export's Path; its NFSv4 Pseudo path stays the image root, so
    `server:/` still names the image root over NFSv4 (NFSv3 mounts the Path: v4 only here).
    Other exports keep Pseudo = Path.
    """
    text = render_ganesha(with_views(ctx, {name: PurePosixPath(path)
                                           for name, path in views.items()}))
    for image in ctx.images:
        if image.name not in views:
            continue
        # TODO(lead): move into render/: NfsExport.pseudo, template `Pseudo = {{ pseudo }}`.
        view = views[image.name]
        old = f'Path = "{view}";\n    Pseudo = "{view}";'
        new = f'Path = "{view}";\n    Pseudo = "{image.path}";'
        if text.count(old) != 1:
            raise ConfigError(f"cannot place the view of image {image.name} in the ganesha "
                              "config (template changed?)")
        text = text.replace(old, new)
    return text


def core_part(config: str) -> str:
    """The config without its EXPORT blocks and blank lines: what SIGHUP does not re-read."""
    return "\n".join(line for line in _EXPORT_BLOCK.sub("", config).splitlines()
                     if line.strip())


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _is_our_ganesha(pid: int, conf: Path) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(argv) and argv[0].endswith(b"ganesha.nfsd") and str(conf).encode() in argv


def running_pid(files: GaneshaFiles) -> int | None:
    """The pid of the ganesha running with `files.conf`, if one runs (started by any oneroot)."""
    pid = _read_pid(files.pid)
    return pid if pid is not None and _is_our_ganesha(pid, files.conf) else None


def log_problems(path: Path, offset: int = 0, limit: int = 8) -> str:
    """The ganesha log's CRIT/FATAL/MAJ lines since `offset` (harmless ones left out)."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    harmless = ("DBUS", "dbus", "krb5", "keytab", "Cannot register NFS V4",
                "Cannot register NFS V3 on UDP", "Cannot register MNT")
    found = [ln.split(" : ", 4)[-1] for ln in lines
             if any(k in ln for k in (":CRIT :", ":FATAL :", ":MAJ :"))
             and not any(h in ln for h in harmless)]
    return "; ".join(found[-limit:])


class GaneshaServer:
    """One `ganesha.nfsd` process: started, watched, restarted with backoff, stopped."""

    def __init__(self, files: GaneshaFiles, *, config: str, bind: ipaddress.IPv4Address,
                 port: int = 2049, binary: str = "ganesha.nfsd", start_timeout: float = 30.0,
                 min_backoff: float = 0.5, max_backoff: float = 30.0,
                 stable_after: float = 60.0,
                 preflight: Callable[[], None] | None = None) -> None:
        self.files = files
        # Run (in a thread) before every start, the restarts after a crash too: raising an
        # OnerootError refuses the start (what it exports is not there), tried again later.
        self.preflight = preflight
        self.bind = bind
        self.port = port
        self.binary = binary
        self.start_timeout = start_timeout
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self._config = config
        self._proc: asyncio.subprocess.Process | None = None
        self._ready = asyncio.Event()
        self._settled = asyncio.Event()
        self._failure: OnerootError | None = None
        self._restart = asyncio.Event()
        self._stopping = False
        self._starts = 0
        self._last_exit: int | None = None
        self._task: asyncio.Task[None] | None = None

    # -- state -------------------------------------------------------------------------------
    @property
    def status(self) -> GaneshaStatus:
        running = self._proc is not None and self._proc.returncode is None
        return GaneshaStatus(pid=self._proc.pid if running and self._proc else None,
                             ready=self._ready.is_set() and running, starts=self._starts,
                             last_exit=self._last_exit)

    @property
    def _probe_host(self) -> str:
        return "127.0.0.1" if self.bind == ipaddress.IPv4Address("0.0.0.0") else str(self.bind)

    async def _listening(self) -> bool:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self._probe_host, self.port), timeout=1.0)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    # -- lifecycle ---------------------------------------------------------------------------
    async def wait_ready(self, timeout: float | None = None) -> None:
        """Until ganesha listens; raises the start failure if the (first) start failed."""
        await asyncio.wait_for(self._settled.wait(), timeout or self.start_timeout + 5)
        if self._failure is not None and not self._ready.is_set():
            raise self._failure

    async def __aenter__(self) -> GaneshaServer:
        self._task = asyncio.create_task(self.run(), name="ganesha")
        try:
            await self.wait_ready()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        """Start ganesha and keep it running until cancelled (then stop it)."""
        await asyncio.to_thread(self._write_config, self._config)
        failures = 0
        try:
            while True:
                started = time.monotonic()
                try:
                    await self._start()
                except OnerootError as exc:
                    self._failure = exc
                    self._settled.set()
                    log.error("nfs.ganesha.start_failed reason=%s hint=%s", exc.message,
                              exc.hint or "-")
                else:
                    assert self._proc is not None
                    waiter = asyncio.create_task(self._proc.wait())
                    restart = asyncio.create_task(self._restart.wait())
                    await asyncio.wait({waiter, restart}, return_when=asyncio.FIRST_COMPLETED)
                    restart.cancel()
                    if self._restart.is_set():
                        self._restart.clear()
                        await self._terminate()
                        waiter.cancel()
                        failures = 0
                        continue
                    self._last_exit = await waiter
                    self._ready.clear()
                    log.warning("nfs.ganesha.exited pid=%d code=%s problems=%s",
                                self._proc.pid, self._last_exit,
                                log_problems(self.files.log) or "-")
                if time.monotonic() - started > self.stable_after:
                    failures = 0
                delay = min(self.max_backoff, self.min_backoff * 2 ** failures)
                failures += 1
                log.info("nfs.ganesha.restart_in seconds=%.1f", delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._restart.wait(), delay)
                self._restart.clear()
        finally:
            await asyncio.shield(self._terminate())

    async def _start(self) -> None:
        if self.preflight is not None:
            await asyncio.to_thread(self.preflight)
        await asyncio.to_thread(self._kill_stale)
        if await self._listening():
            raise ExternalToolError(
                f"something already listens on {self._probe_host}:{self.port}",
                hint="stop the other NFS server, or set another port")
        self.files.log.parent.mkdir(parents=True, exist_ok=True)
        offset = self.files.log.stat().st_size if self.files.log.exists() else 0
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self.binary, "-F", "-f", str(self.files.conf), "-L", str(self.files.log),
                "-p", str(self.files.pid), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True)
        except FileNotFoundError:
            raise ExternalToolError(f"{self.binary} not found",
                                    hint="install nfs-ganesha and nfs-ganesha-vfs") from None
        self._starts += 1
        deadline = time.monotonic() + self.start_timeout
        while not await self._listening():
            if self._proc.returncode is not None or time.monotonic() > deadline:
                code = self._proc.returncode
                if code is None:
                    await self._terminate()
                why = log_problems(self.files.log, offset) or f"see {self.files.log}"
                raise ExternalToolError(
                    f"ganesha did not start listening on {self._probe_host}:{self.port} "
                    f"(exit {code}): {why}", hint=f"check {self.files.conf}")
            await asyncio.sleep(0.1)
        self._failure = None
        self._ready.set()
        self._settled.set()
        log.info("nfs.ganesha.started pid=%d bind=%s port=%d", self._proc.pid, self.bind,
                 self.port)

    async def _terminate(self) -> None:
        proc = self._proc
        self._ready.clear()
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        self._last_exit = proc.returncode
        log.info("nfs.ganesha.stopped pid=%d code=%s", proc.pid, proc.returncode)

    def _kill_stale(self) -> None:
        """A ganesha left by an earlier oneroot (crash): ours if it runs with our config."""
        pid = _read_pid(self.files.pid)
        if pid is None or not _is_our_ganesha(pid, self.files.conf):
            return
        log.warning("nfs.ganesha.stale pid=%d", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(150):
            if not _is_our_ganesha(pid, self.files.conf):
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _write_config(self, config: str) -> bool:
        return write_if_changed(self.files.conf, config.encode(), mode=0o644)

    # -- changes -----------------------------------------------------------------------------
    async def reload(self, config: str, *, timeout: float = 10.0) -> ReloadAction:
        """Apply a new config: nothing if equal, SIGHUP if only exports changed, else restart."""
        old, self._config = self._config, config
        if not await asyncio.to_thread(self._write_config, config) and old == config:
            return ReloadAction.UNCHANGED
        proc = self._proc
        if core_part(old) != core_part(config) or proc is None or proc.returncode is not None:
            self._restart.set()
            self._settled.clear()
            await asyncio.sleep(0)
            log.info("nfs.ganesha.restart reason=core_config")
            return ReloadAction.RESTARTED
        offset = self.files.log.stat().st_size if self.files.log.exists() else 0
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"Reread exports complete" in await asyncio.to_thread(self._log_since, offset):
                log.info("nfs.ganesha.reloaded pid=%d", proc.pid)
                return ReloadAction.RELOADED
            await asyncio.sleep(0.1)
        raise ExternalToolError(f"ganesha did not confirm the export reload within {timeout} s",
                                hint=f"see {self.files.log}")

    def _log_since(self, offset: int) -> bytes:
        try:
            with self.files.log.open("rb") as f:
                f.seek(offset)
                return f.read()
        except OSError:
            return b""
