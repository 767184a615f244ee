"""A command run with a pseudo-terminal as its stdin and stdout (stderr apart), typed into and
read from as a user at a terminal would: `oneroot console`, `oneroot lab console`.

    term = Terminal([*ONEROOT, "console", "node01"])
    term.type(b"hostname\\r"); term.expect(b"node01")
    code, stderr = term.finish()
"""

from __future__ import annotations

import os
import select
import subprocess
import termios
import time
from collections.abc import Sequence


class Terminal:
    def __init__(self, argv: Sequence[str]) -> None:
        self.master, self.slave = os.openpty()
        self.cooked = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen(list(argv), stdin=self.slave, stdout=self.slave,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self.screen = b""

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def expect(self, wanted: bytes, timeout: float = 60) -> None:
        """Read until `wanted` is on the screen (everything read stays in `screen`)."""
        deadline = time.monotonic() + timeout
        while wanted not in self.screen:
            left = deadline - time.monotonic()
            assert left > 0, f"{wanted!r} never shown; screen: {self.screen[-3000:]!r}"
            if select.select([self.master], [], [], min(left, 0.2))[0]:
                self.screen += os.read(self.master, 4096)

    def raw(self) -> bool:
        return not termios.tcgetattr(self.slave)[3] & termios.ICANON

    def wait_raw(self, timeout: float = 60) -> None:
        """Until the command put the terminal in raw mode (its session is up)."""
        deadline = time.monotonic() + timeout
        while not self.raw():
            assert time.monotonic() < deadline and self.proc.poll() is None, self.proc.stderr
            time.sleep(0.05)

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        """Wait for the command's end; its exit code and stderr. The terminal must be as it
        was before."""
        _, err = self.proc.communicate(timeout=timeout)
        assert termios.tcgetattr(self.slave) == self.cooked  # the terminal is restored
        os.close(self.master)
        os.close(self.slave)
        return self.proc.returncode, err.decode()
