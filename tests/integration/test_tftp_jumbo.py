"""`oneroot serve` offers TFTP blksize up to its interface's MTU: 1468 at 1500, the client's
8192 at 9000 (jumbo frames), 8968 at most there; the MTU is read at start and on SIGHUP.
Real clients (curl, atftp) in a network namespace pair."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oneroot.testing.netns import Link, linked_namespaces

pytestmark = pytest.mark.integration

ONEROOT = [sys.executable, "-m", "oneroot"]
SERVER = "10.89.0.1"


def set_mtu(link: Link, mtu: int) -> None:
    """Every device on the path: the client's eth0, the bridge's ports, then the bridge."""
    link.client.ns.run("ip", "link", "set", "dev", link.client.interface, "mtu", str(mtu))
    ports = link.server.ns.run("ip", "-o", "link", "show", "master", link.server.interface)
    for line in ports.stdout.splitlines():
        port = line.split(":")[1].strip().split("@")[0]
        link.server.ns.run("ip", "link", "set", "dev", port, "mtu", str(mtu))
    link.server.ns.run("ip", "link", "set", "dev", link.server.interface, "mtu", str(mtu))


def wait_log(log: Path, pattern: str, after: int = 0, timeout: float = 60) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text()[after:])
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not logged:\n{log.read_text()}")


def fetch(link: Link, client: str, blksize: int, out: Path) -> None:
    if client == "curl":
        argv = ["curl", "-sS", "--tftp-blksize", str(blksize), "-o", str(out),
                f"tftp://{SERVER}/file.bin"]
    else:
        argv = ["atftp", "--option", f"blksize {blksize}", "-g", "-r", "file.bin",
                "-l", str(out), SERVER]
    result = link.client.ns.run(*argv, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def check_fetch(link: Link, log: Path, tmp_path: Path, data: bytes, client: str, asked: int,
                *, expected: int) -> None:
    """`client` asks for blksize `asked`, gets the file intact, and `expected` was negotiated."""
    mark = len(log.read_text())
    got = tmp_path / f"{client}-{asked}.bin"
    fetch(link, client, asked, got)
    assert got.read_bytes() == data
    done = wait_log(log, r"tftp\.done .*file=file\.bin .*blksize=(\d+) ", mark)
    assert int(done.group(1)) == expected, (client, asked, log.read_text()[mark:])


def test_blksize_follows_the_interface_mtu(tmp_path: Path) -> None:
    home, boot = tmp_path / "home", tmp_path / "boot"
    data = os.urandom(3 * 1024 * 1024 + 17)
    with linked_namespaces(f"{SERVER}/24", "10.89.0.2/24") as link:
        base = [*ONEROOT, "--home", str(home)]
        subprocess.run([*base, "init", "--server", SERVER, "--subnet", "10.89.0.0/24",
                        "--interface", link.server.interface, "--image-root", str(tmp_path),
                        "--boot-dir", str(boot)], check=True, capture_output=True)
        boot.mkdir(exist_ok=True)
        (boot / "file.bin").write_bytes(data)
        log = tmp_path / "serve.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                link.server.cmd(*base, "serve", "--no-dhcp", "--no-http", "--no-nfs"),
                stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_log(log, "serve.started")
            assert "max_blksize=1468" in log.read_text()  # the lab link's MTU is 1500
            check_fetch(link, log, tmp_path, data, "curl", 8192, expected=1468)
            set_mtu(link, 9000)
            proc.send_signal(signal.SIGHUP)
            wait_log(log, "tftp.max_blksize old=1468 new=8968")
            check_fetch(link, log, tmp_path, data, "curl", 8192, expected=8192)
            check_fetch(link, log, tmp_path, data, "atftp", 65464, expected=8968)
        finally:
            proc.terminate()
            proc.wait(10)
