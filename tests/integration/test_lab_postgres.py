"""The tests' throwaway PostgreSQL (`oneroot.lab.postgres`) does not outlive the process that
started it: the postmaster runs in a session of its own, so a killed or interrupted test run
used to leave it running in /tmp/oneroot-pg-*, with nothing connected, until someone found it.

Each test starts the server in a child Python process as the tests' fixture does
(`running_postgres()`), kills that child, and watches the postmaster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oneroot.lab.postgres import PostgresServer, reap_stale

pytestmark = pytest.mark.integration

# Prints the server's directory and its watchdog's PID, then waits to be killed.
OWNER = """
import sys, time
from oneroot.lab.postgres import running_postgres
with running_postgres() as server:
    print(server.root, server.watchdog.pid if server.watchdog else 0, flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


class Owner:
    """The child process that started a server, and what it started."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        root, watchdog = self.proc.stdout.readline().split()
        self.root, self.watchdog = Path(root), int(watchdog)
        self.postmaster = int((self.root / "data" / "postmaster.pid").read_text().split()[0])
        assert _alive(self.postmaster)

    def cleanup(self) -> None:
        """Whatever a failed test left: the owner, then the server itself."""
        self.proc.kill()
        self.proc.wait(10)
        if self.root.exists():
            PostgresServer(root=self.root).stop()


@pytest.fixture
def owner() -> Iterator[Owner]:
    started = Owner()
    yield started
    started.cleanup()


def test_a_killed_owner_leaves_no_postmaster(owner: Owner) -> None:
    owner.proc.kill()  # SIGKILL: no cleanup of its own runs
    owner.proc.wait(10)
    assert _wait_gone(owner.postmaster, timeout=15), "the postmaster outlived its owner"
    assert _wait_gone(owner.watchdog, timeout=15)
    assert not owner.root.exists()


def test_an_interrupted_owner_leaves_no_postmaster(owner: Owner) -> None:
    owner.proc.send_signal(signal.SIGTERM)  # as a harness stopping a test run
    owner.proc.wait(10)
    assert _wait_gone(owner.postmaster, timeout=15), "the postmaster outlived its owner"
    assert _wait_gone(owner.watchdog, timeout=15)
    assert not owner.root.exists()


def test_a_server_whose_watchdog_was_killed_too_is_reaped_at_the_next_start(
        owner: Owner) -> None:
    os.kill(owner.watchdog, signal.SIGKILL)
    assert _wait_gone(owner.watchdog, timeout=15)
    assert reap_stale() == []  # its owner runs: kept
    assert _alive(owner.postmaster)
    owner.proc.kill()
    owner.proc.wait(10)
    assert _alive(owner.postmaster)  # nothing stopped it yet
    assert owner.root in reap_stale()
    assert _wait_gone(owner.postmaster, timeout=15)
    assert not owner.root.exists()
