"""The node's side of a serial line for tests: a TCP port on loopback that a simulated BMC
connects to (ipmi_sim's `sol "tcp:HOST:PORT"`), answered by a tiny shell:

    with SerialShell(hostname="node01") as shell:
        SimulatedBmc(..., serial_port=shell.port)

It echoes what is typed, as a terminal does; on Enter, `echo WORDS` prints WORDS, `hostname`
its name, `title TEXT` an xterm title escape (a node writing control sequences); Ctrl-C prints
`^C`. `shell.typed` is everything it received.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

PROMPT = b"# "


class SerialShell:
    def __init__(self, *, hostname: str) -> None:
        self.hostname = hostname
        self.typed = bytearray()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stop = threading.Event()

    def __enter__(self) -> SerialShell:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        line = bytearray()
        while not self._stop.is_set():
            try:
                data = conn.recv(1024)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            self.typed += data
            for byte in data:
                conn.sendall(self._key(bytes([byte]), line))

    def _key(self, key: bytes, line: bytearray) -> bytes:
        if key == b"\x03":
            line.clear()
            return b"^C\r\n" + PROMPT
        if key not in (b"\r", b"\n"):
            line += key
            return key
        command, line[:] = bytes(line), b""
        return b"\r\n" + self._run(command.decode(errors="replace").strip()) + PROMPT

    def _run(self, command: str) -> bytes:
        word, _, rest = command.partition(" ")
        if not word:
            return b""
        if word == "echo":
            return rest.encode() + b"\r\n"
        if word == "hostname":
            return self.hostname.encode() + b"\r\n"
        if word == "title":
            return b"\x1b]0;" + rest.encode() + b"\x07\r\n"
        return f"sh: {word}: not found\r\n".encode()
