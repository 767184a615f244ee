"""`oneroot serve` started as a user starts it, for integration tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def running(argv: Sequence[str], log: Path, *, timeout: float = 60,
            env: Mapping[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run `argv` (an `oneroot serve` command line) with its output in `log`, until it logs
    `serve.started`; SIGTERM it on exit. `env`: its environment [ours]."""
    with log.open("wb") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout
        while "serve.started" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)
