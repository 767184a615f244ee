"""HTTP of `oneroot serve` with curl: per-node iPXE scripts, files with Range and correct
Content-Length (sendfile), HEAD, and no way out of the boot dir. Loopback only."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oneroot.testing.ports import free_port
from oneroot.testing.serving import running

pytestmark = pytest.mark.integration

ONEROOT = [sys.executable, "-m", "oneroot"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    tmp = tmp_path_factory.mktemp("http")
    home, boot = tmp / "home", tmp / "boot"
    base = [*ONEROOT, "--home", str(home)]
    subprocess.run([*base, "init", "--image-root", str(tmp), "--boot-dir", str(boot),
                    "--state-dir", str(tmp / "state")], check=True, capture_output=True)
    subprocess.run([*base, "node", "add", "node01", "--mac", "52:54:00:00:00:01", "--ip",
                    "10.0.0.11"], check=True, capture_output=True)
    boot.mkdir(exist_ok=True)
    (boot / "vmlinuz").write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    (tmp / "secret").write_text("not for nodes\n")
    (boot / "escape").symlink_to(tmp / "secret")
    port = free_port()
    with running([*base, "serve", "--no-dhcp", "--no-tftp", "--no-nfs", "--bind", "127.0.0.1",
                  "--http-port", str(port)], tmp / "serve.log"):
        yield f"http://127.0.0.1:{port}", boot, home


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=30)


def test_ipxe_script_for_the_node(served: tuple[str, Path, Path]) -> None:
    url, _, _ = served
    out = curl(f"{url}/boot/node01.ipxe").stdout.decode()
    assert out.startswith("#!ipxe")
    assert "/node01;rw" in out and "kernel http://127.0.0.1:" in out


def test_the_image_version_a_boot_script_names_is_what_status_says_the_node_runs(
        served: tuple[str, Path, Path]) -> None:
    url, _, home = served
    assert curl(f"{url}/boot/node01.ipxe").returncode == 0
    deadline = time.monotonic() + 15
    while True:
        doc = json.loads(subprocess.run([*ONEROOT, "--home", str(home), "status", "--json"],
                                        check=True, capture_output=True).stdout)
        (node,) = doc["nodes"]
        if node["image"] is not None or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (node["image"], node["next_image"]) == ("default", "default")


def test_whole_file_range_and_head(served: tuple[str, Path, Path], tmp_path: Path) -> None:
    url, boot, _ = served
    data = (boot / "vmlinuz").read_bytes()
    got = tmp_path / "k"
    done = curl("-o", str(got), "-w", "%{http_code} %{size_download}", f"{url}/boot/vmlinuz")
    assert done.stdout.decode() == f"200 {len(data)}"
    assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256(data).digest()
    part = curl("-r", "1000-1999", f"{url}/boot/vmlinuz", "-D", "-")
    head, _, body = part.stdout.partition(b"\r\n\r\n")
    assert b" 206 " in head.split(b"\r\n")[0]
    assert b"Content-Length: 1000" in head
    assert body == data[1000:2000]
    hd = curl("-I", f"{url}/boot/vmlinuz").stdout.decode()
    assert f"Content-Length: {len(data)}" in hd


@pytest.mark.parametrize("path", ["/boot/../home/inventory.db", "/boot/%2e%2e/secret",
                                  "/boot/escape", "/boot/..%2fsecret", "/boot//etc/passwd",
                                  "/boot/sub/../../secret"])
def test_never_outside_the_boot_dir(served: tuple[str, Path, Path], path: str) -> None:
    url, _, _ = served
    done = curl("--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", f"{url}{path}")
    assert done.stdout.decode() in ("403", "404")


def test_a_pxelinux_file_over_tftp_records_the_version_too(tmp_path: Path) -> None:
    home = tmp_path / "home"
    base = [*ONEROOT, "--home", str(home)]
    subprocess.run([*base, "init", "--image-root", str(tmp_path), "--boot-dir",
                    str(tmp_path / "boot"), "--state-dir", str(tmp_path / "state")],
                   check=True, capture_output=True)
    subprocess.run([*base, "node", "add", "node02", "--mac", "52:54:00:00:00:02", "--ip",
                    "10.0.0.12"], check=True, capture_output=True)
    (tmp_path / "boot").mkdir(exist_ok=True)
    port = free_port()
    with running([*base, "serve", "--no-dhcp", "--no-http", "--no-nfs", "--bind", "127.0.0.1",
                  "--tftp-port", str(port)], tmp_path / "serve.log"):
        got = curl(f"tftp://127.0.0.1:{port}/pxelinux.cfg/01-52-54-00-00-00-02")
        assert got.returncode == 0 and b"/node02;rw" in got.stdout
        deadline = time.monotonic() + 15
        while True:
            doc = json.loads(subprocess.run([*base, "status", "--json"], check=True,
                                            capture_output=True).stdout)
            (node,) = doc["nodes"]
            if node["image"] is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert node["image"] == "default"
