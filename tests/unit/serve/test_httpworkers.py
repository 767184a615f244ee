"""serve/httpworkers.py's supervisor with stand-in workers (small Python programs): events
come back in order, a worker that cannot start stops serve with an error, and so does one
that dies again and again before it is ready."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from oneroot.errors import OnerootError
from oneroot.model.events import BootEvent
from oneroot.model.limits import DEFAULT_LIMITS
from oneroot.model.paths import Paths
from oneroot.model.server import ONE_SERVER
from oneroot.serve import httpworkers
from oneroot.serve.httpworkers import HttpWorkers, WorkerConfig, listen_socket

# A worker that answers "ready" and sends two events the first time it runs, then exits;
# every later start exits at once (before "ready").
ONCE = """
import sys, time
from pathlib import Path
from oneroot.model.events import BootEvent
from oneroot.serve.httpworkers import read_frame, write_frame
config = read_frame(sys.stdin.buffer)
marker = Path(sys.argv[1])
if marker.exists():
    sys.exit(1)
marker.touch()
write_frame(sys.stdout.buffer, "ready")
for stage in ("layers", "union"):
    write_frame(sys.stdout.buffer, BootEvent(time=1.0, kind="stage", stage=stage))
time.sleep(0.2)
"""


def _workers(tmp_path: Path, command: tuple[str, ...],
             events: list[BootEvent]) -> HttpWorkers:
    sock = listen_socket("127.0.0.1", 0, 16)
    config = WorkerConfig(paths=Paths(home=tmp_path), http_host=None, role=ONE_SERVER,
                          boot_dir=tmp_path, bind="127.0.0.1", port=sock.getsockname()[1],
                          limits=DEFAULT_LIMITS, relay=tmp_path / "serve.sock",
                          listen_fd=sock.fileno(), reload_interval=1.0, log_level="INFO")
    return HttpWorkers(config, sock, 1, events.append, command=command)


def test_a_worker_that_cannot_start_stops_serve_with_an_error(tmp_path: Path) -> None:
    async def main() -> None:
        workers = _workers(tmp_path, (sys.executable, "-c", "raise SystemExit(3)"), [])
        # the status itself is 3, or 255 where asyncio's child watcher found it reaped
        with pytest.raises(OnerootError, match=r"did not start: exit status (3|255) "):
            await workers.start()
        await workers.close()

    asyncio.run(main())


def test_events_come_back_in_order_and_a_worker_dying_before_ready_stops_serve(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(httpworkers, "RESTART_DELAYS", (0.01,))
    events: list[BootEvent] = []

    async def main() -> None:
        workers = _workers(tmp_path, (sys.executable, "-c", ONCE, str(tmp_path / "ran")),
                           events)
        await workers.start()
        with pytest.raises(OnerootError, match="did not start"):
            async with asyncio.timeout(60):
                try:
                    await workers.run()
                except* OnerootError as failed:
                    raise failed.exceptions[0] from None
        await workers.close()

    asyncio.run(main())
    assert [e.stage for e in events] == ["layers", "union"]
