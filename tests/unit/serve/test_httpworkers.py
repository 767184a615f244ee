"""serve/httpworkers.py's supervisor with stand-in workers (small Python programs): events
come back in order, a worker that cannot start stops serve with an error, and so does one
that dies again and again before it is ready; the events' JSON frames read back as written."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import socket
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oneroot.errors import OnerootError
from oneroot.model.events import BootEvent
from oneroot.model.limits import DEFAULT_LIMITS
from oneroot.model.paths import Paths
from oneroot.model.server import ONE_SERVER
from oneroot.serve import httpworkers
from oneroot.serve.httpworkers import (
    READY,
    HttpWorkers,
    WorkerConfig,
    event_json,
    json_event,
    listen_socket,
    read_config,
    write_frame,
)

# A worker that answers "ready" and sends two events the first time it runs, then exits;
# every later start exits at once (before "ready").
ONCE = """
import sys, time
from pathlib import Path
from oneroot.model.events import BootEvent
from oneroot.serve.httpworkers import read_config, write_frame
config = read_config(sys.stdin.buffer)
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
    return HttpWorkers(_config(tmp_path, sock), sock, 1, events.append, command=command)


def _config(tmp_path: Path, sock: socket.socket) -> WorkerConfig:
    return WorkerConfig(paths=Paths(home=tmp_path), http_host=None, role=ONE_SERVER,
                        boot_dir=tmp_path, bind="127.0.0.1", port=sock.getsockname()[1],
                        limits=DEFAULT_LIMITS, relay=tmp_path / "serve.sock",
                        listen_fd=sock.fileno(), reload_interval=1.0, log_level="INFO")


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


_TEXT = st.text(max_size=40)  # any code point, surrogates too (a path aiohttp decoded)
EVENTS = st.builds(
    BootEvent, time=st.floats(allow_nan=False), kind=_TEXT, node=st.none() | _TEXT,
    mac=st.none() | _TEXT, peer=st.none() | st.ip_addresses(v=4), stage=st.none() | _TEXT,
    file=st.none() | _TEXT, bytes=st.integers(min_value=0, max_value=2**63),
    duration=st.floats(allow_nan=False), detail=st.dictionaries(_TEXT, _TEXT, max_size=4),
    server=st.none() | _TEXT)


@given(EVENTS)
def test_an_event_reads_back_as_the_worker_wrote_it(event: BootEvent) -> None:
    back = json_event(event_json(event))
    assert back == event
    assert isinstance(back, BootEvent) and type(back.peer) is type(event.peer)


def test_frames_on_a_pipe_read_back_in_order(tmp_path: Path) -> None:
    event = BootEvent(time=1.5, kind="stage", node="node01", stage="layers",
                      peer=ipaddress.IPv4Address("10.0.0.11"), detail={"status": "ok"})
    pipe = io.BytesIO()
    for message in (READY, event):
        write_frame(pipe, message)

    async def read_back() -> list[BootEvent | str]:
        reader = asyncio.StreamReader()
        reader.feed_data(pipe.getvalue())
        reader.feed_eof()
        return [await httpworkers._read_frame(reader) for _ in range(2)]

    assert asyncio.run(read_back()) == [READY, event]
    with listen_socket("127.0.0.1", 0, 16) as sock:
        config = _config(tmp_path, sock)
    assert read_config(io.BytesIO(httpworkers._config_frame(config))) == config
    assert read_config(io.BytesIO(b"")) is None
