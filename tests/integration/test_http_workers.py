"""`oneroot serve`'s HTTP worker processes (serve/httpworkers.py), with curl on loopback: HTTP
is answered while serve's main process is stopped, the reports a worker took are recorded,
and a worker that dies is replaced while serve goes on."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from oneroot.inventory import database
from oneroot.inventory.events import EventStore
from oneroot.model.paths import Paths
from oneroot.testing.ports import free_port
from oneroot.testing.serving import running

pytestmark = pytest.mark.integration

ONEROOT = [sys.executable, "-m", "oneroot"]
NODE_ADDRESS = "127.0.0.11"


@dataclass(frozen=True)
class Served:
    url: str
    home: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def oneroot(self, *argv: str) -> str:
        return subprocess.run([*ONEROOT, "--home", str(self.home), *argv], check=True,
                              capture_output=True, text=True, timeout=60).stdout

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        found = []
        for pid in children.split():
            try:  # a child reaped since the list was read is gone
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"oneroot.cli.httpworker" in cmdline:
                found.append(int(pid))
        return found


def init_home(tmp: Path) -> list[str]:
    """A home with node01 at NODE_ADDRESS and a boot file; the `oneroot --home` command."""
    home, boot = tmp / "home", tmp / "boot"
    base = [*ONEROOT, "--home", str(home)]
    subprocess.run([*base, "init", "--server", "127.0.0.1", "--subnet", "127.0.0.0/24",
                    "--image-root", str(tmp), "--boot-dir", str(boot), "--state-dir",
                    str(tmp / "state")], check=True, capture_output=True)
    subprocess.run([*base, "node", "add", "node01", "--mac", "52:54:00:00:00:01", "--ip",
                    NODE_ADDRESS], check=True, capture_output=True)
    boot.mkdir(exist_ok=True)
    (boot / "vmlinuz").write_bytes(os.urandom(2 * 1024 * 1024 + 3))
    return base


def serve_http(base: list[str], port: int, *limits: str) -> list[str]:
    return [*base, "serve", "--no-dhcp", "--no-tftp", "--no-nfs", "--bind", "127.0.0.1",
            "--http-port", str(port), *(f"--limit={limit}" for limit in limits)]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("workers")
    base = init_home(tmp)
    port, log = free_port(), tmp / "serve.log"
    with running(serve_http(base, port), log) as proc:
        yield Served(f"http://127.0.0.1:{port}", tmp / "home", log, proc)


def curl(*args: str, timeout: float = 30) -> str:
    """The answer's status and body, from the node's address."""
    done = subprocess.run(["curl", "-sS", "--interface", NODE_ADDRESS, "-m", str(timeout),
                           "-w", "\n%{http_code}", *args], capture_output=True, text=True,
                          timeout=timeout + 10)
    body, _, code = done.stdout.rpartition("\n")
    return f"{code} {body.strip()}"


def stage_of(served: Served, node: str) -> str:
    status = json.loads(served.oneroot("status", "--json"))
    return next(str(n["stage"]) for n in status["nodes"] if n["node"] == node)


def wait_for(condition: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_boot_files_and_reports_are_answered_while_serves_main_process_is_stopped(
        served: Served) -> None:
    assert len(served.workers()) == 1
    os.kill(served.proc.pid, signal.SIGSTOP)  # DHCP and TFTP's process: HTTP goes on
    try:
        script = curl(f"{served.url}/boot/node01.ipxe")
        kernel = curl("-o", str(served.home / "kernel"), f"{served.url}/boot/vmlinuz")
        report = curl("-d", "stage=layers&status=ok", f"{served.url}/api/v1/report")
    finally:
        os.kill(served.proc.pid, signal.SIGCONT)
    assert script.startswith("200 #!ipxe"), script
    assert kernel == "200 ", kernel
    assert (served.home / "kernel").stat().st_size == 2 * 1024 * 1024 + 3
    assert report == "200 ok", report
    # the worker's events reach serve's main process once it runs again: none was lost
    wait_for(lambda: stage_of(served, "node01") == "layers")


def test_a_worker_that_dies_is_replaced_and_serve_goes_on(served: Served) -> None:
    [old] = served.workers()
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: served.workers() not in ([], [old]))
    [new] = served.workers()
    wait_for(lambda: f"http.worker_started slot=0 pid={new}" in served.log.read_text())
    assert re.search(rf"ERROR http.worker_died slot=0 pid={old} status=(-9|255) restarting",
                     served.log.read_text())
    assert curl("-d", "stage=union&status=ok", f"{served.url}/api/v1/report") == "200 ok"
    wait_for(lambda: stage_of(served, "node01") == "union")
    assert served.proc.poll() is None


def test_the_status_api_and_page_are_relayed_to_serves_main_process(served: Served) -> None:
    status = json.loads(curl(f"{served.url}/api/v1/status").split(" ", 1)[1])
    assert status["server"]["pid"] == served.proc.pid  # answered by the main process
    assert curl(f"{served.url}/").startswith("200 ")
    assert curl("-X", "POST", f"{served.url}/boot/vmlinuz").startswith("405 ")
    assert curl("-d", "stage=nonsense", f"{served.url}/api/v1/report").startswith("400 ")


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_killed_serve_leaves_nothing_outside_its_home_and_the_next_start_cleans_up(
        tmp_path: Path) -> None:
    """The relay's socket is HOME/run/http/serve-PID.sock, not in a temporary directory a
    SIGKILL leaves behind; a later serve on the home removes a dead serve's socket and keeps
    a running one's."""
    base = init_home(tmp_path)
    relays = tmp_path / "home" / "run" / "http"
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir)}  # where a temporary directory would go
    with running(serve_http(base, free_port()), tmp_path / "killed.log", env=env) as killed:
        killed_socket = relays / f"serve-{killed.pid}.sock"
        [worker] = Served("", tmp_path / "home", tmp_path / "killed.log", killed).workers()
        killed.kill()
        killed.wait(10)
    wait_for(lambda: _gone(worker), timeout=30)  # its stdin closed: it stops
    assert list(tmpdir.iterdir()) == []
    assert killed_socket.is_socket()  # its own home holds it, until a serve starts there
    port = free_port()
    with running(serve_http(base, port), tmp_path / "first.log", env=env) as first:
        first_socket = relays / f"serve-{first.pid}.sock"
        assert sorted(relays.iterdir()) == [first_socket]
        with running(serve_http(base, free_port()), tmp_path / "second.log", env=env) as second:
            assert sorted(relays.iterdir()) == sorted(
                [first_socket, relays / f"serve-{second.pid}.sock"])
        # relayed to the first serve over its socket, still there (else: 502)
        assert curl(f"http://127.0.0.1:{port}/api/v1/status").startswith("200 {")
        assert sorted(relays.iterdir()) == [first_socket]
    assert list(relays.iterdir()) == []
    assert list(tmpdir.iterdir()) == []


def test_a_report_tried_again_on_another_worker_is_recorded_once(tmp_path: Path) -> None:
    """A node sends a report again when it saw no answer; with two workers the second try
    may be taken by the other one. Each try is answered; serve records the report once."""
    base = init_home(tmp_path)
    port, log = free_port(), tmp_path / "serve.log"
    with running(serve_http(base, port, "http_workers=2"), log) as proc:
        served = Served(f"http://127.0.0.1:{port}", tmp_path / "home", log, proc)
        wait_for(lambda: len(served.workers()) == 2)
        answers = []
        for stopped in served.workers():  # each try taken by the other worker
            os.kill(stopped, signal.SIGSTOP)
            try:
                answers.append(curl("-d", "stage=layers&status=ok", f"{served.url}/api/v1/report"))
            finally:
                os.kill(stopped, signal.SIGCONT)
        assert answers == ["200 ok", "200 ok"]
        # both tries logged (by the workers, after their answers: wait for the lines)
        wait_for(lambda: len(re.findall(r"stage\.report node=node01 stage=layers",
                                        log.read_text())) == 2)
        # a report after them: once it is stored, so is whatever came before it
        assert curl("-d", "stage=union&status=ok", f"{served.url}/api/v1/report") == "200 ok"
        wait_for(lambda: stage_of(served, "node01") == "union")
    paths = Paths(home=tmp_path / "home")
    store = EventStore(database.locate(paths, paths.events_db))
    try:
        reported = [e.detail["reported"] for e in store.node_events("node01", "stage", since=0)]
    finally:
        store.close()
    assert reported == ["layers", "union"]
