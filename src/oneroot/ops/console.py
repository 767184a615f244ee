"""`oneroot console NODE`: relay a terminal to a node's serial console (IPMI SOL) until the
user types the escape sequence, and append what the node wrote to a log on the server.

The log (`<home>/console/<node>.log`, one older generation in `.log.1`) keeps the node's bytes
as sent; whoever prints it later (`--tail`) makes control characters visible.
"""

from __future__ import annotations

import os
import select
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from oneroot.bmc import BmcCredentials, SolSession
from oneroot.errors import ConfigError
from oneroot.model.profile import BmcProtocol
from oneroot.model.resolved import ResolvedCluster
from oneroot.ops.power import credentials

MAX_CONSOLE_LOG = 1 << 20  # bytes in <node>.log before it moves to <node>.log.1
MAX_TAIL = 64 << 10  # bytes `--tail` reads from the end of the log
POLL = 0.05  # seconds the relay waits for the BMC before looking at the keyboard again
ESCAPE_HELP = "~. at the start of a line leaves; ~~ sends one ~"

_DIR_MODE = 0o700
_LOG_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_NEWLINES = b"\r\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsoleTarget:
    node: str
    creds: BmcCredentials
    log_path: Path


def console_dir(home: Path) -> Path:
    return home / "console"


def target(cluster: ResolvedCluster, home: Path, name: str) -> ConsoleTarget:
    """The node's BMC credentials and log file (raises before anything is opened)."""
    node = cluster.node(name)
    if node.profile.bmc_protocol is not BmcProtocol.IPMI:
        raise ConfigError(f"node {node.name}: the console is IPMI serial-over-LAN, and its "
                          f"BMC is set to {node.profile.bmc_protocol.value}",
                          hint=f"most Redfish BMCs also speak IPMI: oneroot node set "
                               f"{node.name} --set bmc_protocol=ipmi")
    return ConsoleTarget(node=node.name, creds=credentials(node),
                         log_path=console_dir(home) / f"{node.name}.log")


class EscapeDetector:
    """The ssh-style escape: `~` typed at the start of a line, then `.` leaves and `~` sends a
    single `~`; anything else is sent after the held `~`. A state machine over bytes."""

    def __init__(self) -> None:
        self._line_start = True
        self._tilde = False

    def feed(self, typed: bytes) -> tuple[bytes, bool]:
        """(bytes to send to the node, whether the user asked to leave)."""
        out = bytearray()
        for byte in typed:
            ch = bytes([byte])
            if self._tilde:
                self._tilde = False
                if ch == b".":
                    return bytes(out), True
                out += b"~" if ch == b"~" else b"~" + ch
            elif ch == b"~" and self._line_start:
                self._tilde = True
                continue
            else:
                out += ch
            self._line_start = ch in _NEWLINES
        return bytes(out), False


class ConsoleLog:
    """Appends a node's console output to its log, moving it to `.1` past `limit` bytes. The
    file is opened without following links and must be a regular file."""

    def __init__(self, path: Path, *, limit: int = MAX_CONSOLE_LOG) -> None:
        self.path = path
        self.limit = limit
        self._dir_fd = -1
        self._fd = -1
        self._size = 0

    def __enter__(self) -> ConsoleLog:
        self.path.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        self._dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._open()
        return self

    def _open(self) -> None:
        try:
            fd = os.open(self.path.name, _LOG_FLAGS, 0o600, dir_fd=self._dir_fd)
        except OSError as error:
            raise ConfigError(f"cannot open the console log {self.path}: {error.strerror}",
                              hint=f"remove {self.path} if it is a link or not a file") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise ConfigError(f"the console log {self.path} is not a regular file",
                              hint=f"remove {self.path}")
        self._fd, self._size = fd, st.st_size

    def write(self, data: bytes) -> None:
        while data:
            if self._size >= self.limit:
                self._rotate()
            room = self.limit - self._size
            chunk, data = data[:room], data[room:]
            os.write(self._fd, chunk)
            self._size += len(chunk)

    def note(self, text: str) -> None:
        """A line of oneroot's own (session start and end), on a line of its own."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.write(f"\n[oneroot {stamp}] {text}\n".encode())

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        os.rename(self.path.name, f"{self.path.name}.1", src_dir_fd=self._dir_fd,
                  dst_dir_fd=self._dir_fd)
        self._open()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1


def relay(sol: SolSession, log: ConsoleLog, *, keyboard: int, screen: int) -> str:
    """Copy the node's output to `screen` and the log, and `keyboard` to the node, until the
    escape sequence or the end of the keyboard's input. Returns why it stopped."""
    escape = EscapeDetector()
    while True:
        received = sol.receive(POLL)
        if received:
            log.write(received)
            os.write(screen, received)
        ready, _, _ = select.select([keyboard], [], [], 0)
        if not ready:
            continue
        typed = os.read(keyboard, 4096)
        if not typed:
            return "end of input"
        send, leave = escape.feed(typed)
        if send:
            sol.send(send)
        if leave:
            return "escape"


def session(target: ConsoleTarget, *, keyboard: int, screen: int,
            on_connected: Callable[[], None] | None = None) -> str:
    """Open the BMC's SOL, then relay (see `relay`); the log records start, end and output."""
    with SolSession(target.creds) as sol, ConsoleLog(target.log_path) as log:
        log.note(f"console of {target.node} opened through BMC {target.creds.where}")
        if on_connected is not None:
            on_connected()
        reason = "error"
        try:
            reason = relay(sol, log, keyboard=keyboard, screen=screen)
        finally:
            log.note(f"console of {target.node} closed ({reason})")
    return reason


def tail(path: Path, *, limit: int = MAX_TAIL) -> bytes:
    """The last `limit` bytes of a console log (never through a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return b""
    except OSError as error:
        raise ConfigError(f"cannot read the console log {path}: {error.strerror}",
                          hint=f"remove {path} if it is a link") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"the console log {path} is not a regular file",
                              hint=f"remove {path}")
        os.lseek(fd, max(0, st.st_size - limit), os.SEEK_SET)
        return os.read(fd, limit)
    finally:
        os.close(fd)
