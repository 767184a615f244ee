"""The ganesha supervisor against a stand-in process (no NFS): ready when the port listens,
restart after a crash, SIGHUP for export changes, restart for core changes, clean stop.
The real ganesha is in tests/integration/test_nfs_ganesha_view.py."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from oneroot.errors import ConfigError, ExternalToolError
from oneroot.nfs import GaneshaFiles, GaneshaServer, ReloadAction, core_part
from oneroot.testing.ports import free_port

FAKE = Path(__file__).with_name("fake_ganesha.py")
LOCAL = ipaddress.IPv4Address("127.0.0.1")


def _config(port: int, exports: str = "", extra: str = "") -> str:
    return (f"NFS_CORE_PARAM {{\n    NFS_Port = {port};\n}}\n{extra}"
            f"\n# node\nEXPORT {{\n    Path = \"/x\";\n{exports}}}\n")


@pytest.fixture
def binary(tmp_path: Path) -> Iterator[str]:
    script = tmp_path / "ganesha.nfsd"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE} \"$@\"\n")
    script.chmod(0o755)
    yield str(script)


def _server(tmp_path: Path, binary: str, config: str, port: int,
            preflight: Callable[[], None] | None = None) -> GaneshaServer:
    return GaneshaServer(GaneshaFiles.in_dir(tmp_path / "run"), config=config, bind=LOCAL,
                         port=port, binary=binary, start_timeout=10, min_backoff=0.05,
                         max_backoff=0.2, preflight=preflight)


def test_core_part_ignores_exports() -> None:
    a, b = _config(1, "    Access = RO;\n"), _config(1, "    Access = RW;\n")
    assert a != b and core_part(a) == core_part(b)
    assert core_part(_config(1)) != core_part(_config(2))


def test_start_reload_restart_stop(tmp_path: Path, binary: str) -> None:
    port = free_port()

    async def scenario() -> None:
        server = _server(tmp_path, binary, _config(port), port)
        async with server:
            assert server.status.ready and server.status.starts == 1
            pid = server.status.pid
            assert await server.reload(_config(port)) is ReloadAction.UNCHANGED
            assert await server.reload(_config(port, "    X = 1;\n")) is ReloadAction.RELOADED
            assert server.status.pid == pid  # same process: exports re-read in place
            assert "X = 1" in (tmp_path / "run" / "ganesha.conf").read_text()
            new_port = free_port()
            server.port = new_port
            assert await server.reload(_config(new_port)) is ReloadAction.RESTARTED
            await server.wait_ready()
            assert server.status.pid != pid and server.status.starts == 2
            pid = server.status.pid
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    asyncio.run(scenario())


def test_crash_is_restarted(tmp_path: Path, binary: str) -> None:
    port = free_port()

    async def scenario() -> None:
        server = _server(tmp_path, binary, _config(port, extra="# fake: crash_after=0.3\n"),
                         port)
        async with server:
            deadline = time.monotonic() + 60  # three crashes and restarts, on a loaded machine
            while server.status.starts < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert server.status.starts >= 3
            assert server.status.last_exit == 3

    asyncio.run(scenario())


def test_a_failing_start_is_reported(tmp_path: Path, binary: str) -> None:
    port = free_port()

    async def scenario() -> None:
        server = _server(tmp_path, binary, _config(port, extra="# fake: fail\n"), port)
        with pytest.raises(ExternalToolError, match="bad things"):
            async with server:
                pass

    asyncio.run(scenario())


def test_refuses_a_port_someone_else_listens_on(tmp_path: Path, binary: str) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]

        async def scenario() -> None:
            with pytest.raises(ExternalToolError, match="already listens"):
                async with _server(tmp_path, binary, _config(port), port):
                    pass

        asyncio.run(scenario())


def test_cancelling_run_stops_ganesha(tmp_path: Path, binary: str) -> None:
    port = free_port()

    async def scenario() -> None:
        server = _server(tmp_path, binary, _config(port), port)
        task = asyncio.create_task(server.run())
        await server.wait_ready()
        pid = server.status.pid
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    asyncio.run(scenario())


def test_a_refusing_preflight_stops_the_first_start_and_the_restarts(tmp_path: Path,
                                                                     binary: str) -> None:
    """What ganesha would export must be there before every start, the restarts after a
    crash too (`oneroot serve` checks that HOME/images is mounted): refused, ganesha is not
    run; tried again with the backoff, it starts once the check passes."""
    port = free_port()
    calls: list[bool] = []

    def preflight() -> None:
        refusing = (tmp_path / "refuse").exists()
        calls.append(refusing)
        if refusing:
            raise ConfigError("HOME/images is not mounted", hint="mount it")

    async def until(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 60
        while not condition() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert condition()

    async def scenario() -> None:
        (tmp_path / "refuse").touch()
        with pytest.raises(ConfigError, match="not mounted"):
            async with _server(tmp_path, binary, _config(port), port, preflight):
                pass
        (tmp_path / "refuse").unlink()
        server = _server(tmp_path, binary, _config(port, extra="# fake: crash_after=0.3\n"),
                         port, preflight)
        async with server:
            assert server.status.starts == 1
            (tmp_path / "refuse").touch()
            await until(lambda: calls[-3:] == [True] * 3)  # crashed; restarts refused
            assert server.status.starts == 1 and server.status.pid is None
            (tmp_path / "refuse").unlink()
            await until(lambda: server.status.starts >= 2)

    asyncio.run(scenario())
