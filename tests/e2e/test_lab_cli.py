"""`oneroot lab up / status / console / down` end to end (issue 6, part 5): two QEMU nodes
netboot from a lab that outlives the command, reach their runlevel, node01's file appears in
its layer on the server, and `lab down` leaves nothing behind, also after the supervisor was
killed (SIGKILL: no teardown of its own)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oneroot.initramfs.kernel import default_cache_dir
from oneroot.lab import list_netns
from oneroot.ops import labctl
from oneroot.ops.labcontrol import process_start_time

pytestmark = pytest.mark.e2e

CLI = ("import sys\n"
       "from oneroot.cli.main import main\n"
       "sys.exit(main(sys.argv[1:]))\n")


def oneroot(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("the lab creates network namespaces: run as root")
    try:
        yield tmp_path / "lab"
    finally:
        labctl.stop_lab(tmp_path / "lab")


def test_lab_up_status_console_down(workdir: Path) -> None:
    started = time.monotonic()
    up = oneroot("lab", "up", "--nodes", "2", "--workdir", str(workdir), "--timeout", "900",
                 "--cache-dir", str(default_cache_dir()), timeout=1000)
    print(up.stdout[-3000:], up.stderr[-3000:])
    assert up.returncode == 0
    print(f"lab up: {time.monotonic() - started:.1f} s")
    assert "node01: " in up.stdout and "node02: " in up.stdout
    hello = workdir / "state/systems/node01/upper/var/tmp/hello-from-node01"
    assert hello.read_text().startswith("hello from node01: ")
    assert "fuse" in hello.read_text()  # node01's top is its rw NFS layer
    assert hello.read_text().strip() in up.stdout

    # The lab outlived `lab up`: another invocation sees it.
    status = json.loads(oneroot("lab", "status", "--json", "--workdir", str(workdir)).stdout)
    assert status["running"] and status["phase"] == "up"
    netns = status["netns"]
    assert netns in list_netns()
    nodes = {n["node"]: n for n in status["nodes"]}
    assert {n["stage"] for n in nodes.values()} == {"init"}
    assert all(n["runlevel"] and n["runlevel"].endswith(".target") for n in nodes.values())
    assert nodes["node01"]["top"] == "rw NFS layer" and nodes["node02"]["top"] == "tmpfs"
    console = oneroot("lab", "console", "node01", "--no-follow", "-n", "200", "--workdir",
                      str(workdir))
    # systemd shortens "Starting oneroot-lab-hello.service - oneroot lab: hello from this
    # node..." to the console's width (…eroot lab: hello…): match the end of the description.
    assert console.returncode == 0 and "lab: hello from this node" in console.stdout

    # A supervisor killed without its teardown: `lab down` finds the rest by recorded ids.
    pids = [n["pid"] for n in nodes.values()]
    os.kill(status["supervisor_pid"], signal.SIGKILL)
    time.sleep(0.5)
    assert json.loads(oneroot("lab", "status", "--json", "--workdir", str(workdir)).stdout
                      )["phase"] == "crashed"
    down = oneroot("lab", "down", "--workdir", str(workdir))
    assert down.returncode == 0, down.stderr
    assert netns not in list_netns()
    for pid in pids:
        assert process_start_time(pid) is None, f"QEMU {pid} survived"
    assert not labctl.mounts_under(workdir)
    assert json.loads(oneroot("lab", "status", "--json", "--workdir", str(workdir)).stdout
                      )["phase"] == "down"
