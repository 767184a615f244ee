"""nfs-ganesha started on a rendered config, bound to 127.0.0.1, read by a real NFS client.

NFSv3 needs rpcbind; when none runs, the config asks for NFSv4 only (and this test never
starts rpcbind). Ports are free high ports so a real NFS server on this machine is untouched.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from oneroot.model import Settings
from oneroot.net import MacAddress
from oneroot.render import (
    ClusterContext,
    ClusterNode,
    GroupLayerExport,
    ImageExport,
    render_ganesha,
)
from oneroot.testing.nfsclient import NfsClient
from oneroot.testing.ports import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("ganesha.nfsd") is None or shutil.which("nfs-ls") is None,
        reason="needs nfs-ganesha and nfs-ls (libnfs-utils)",
    ),
]

LOOPBACK = ipaddress.IPv4Address("127.0.0.1")
OTHER_CLIENT = ipaddress.IPv4Address("127.0.0.2")
STARTED = "NFS SERVER INITIALIZED"


def rpcbind_running() -> bool:
    if shutil.which("rpcinfo") is None:
        return False
    return subprocess.run(["rpcinfo", "-p", str(LOOPBACK)], capture_output=True,
                          check=False, timeout=10).returncode == 0


@dataclass
class Ganesha:
    root: Path
    port: int
    log: Path

    def ls(self, path: Path) -> subprocess.CompletedProcess[str]:
        return NfsClient(self.port, host=str(LOOPBACK)).ls(path)


@pytest.fixture(scope="module")
def ganesha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ganesha]:
    """One ganesha for the module's tests (starting one takes ~2 s)."""
    tmp_path = tmp_path_factory.mktemp("ganesha")
    image, state, groups = tmp_path / "image", tmp_path / "state", tmp_path / "groups"
    for directory, marker in [(image / "etc", "passwd"), (state / "node01", "mine"),
                              (state / "node02", "theirs"), (groups / "compute", "layer")]:
        directory.mkdir(parents=True)
        (directory / marker).write_text("x\n")
    settings = Settings(server_address=LOOPBACK, subnet=ipaddress.IPv4Network("127.0.0.0/8"),
                        state_dir=PurePosixPath(state), group_dir=PurePosixPath(groups))
    nodes = tuple(
        ClusterNode(name=name, macs=(MacAddress.parse(f"52:54:00:00:00:0{i}"),),
                    address=address, export_path=settings.diff_overlay_dir(name),
                    export_id=100 + i, ipxe_script_url=f"http://127.0.0.1/{name}.ipxe")
        for i, (name, address) in enumerate([("node01", LOOPBACK), ("node02", OTHER_CLIENT)], 1)
    )
    port = free_port()
    ctx = ClusterContext(
        settings=settings,
        images=(ImageExport(name="default", path=PurePosixPath(image), export_id=1),),
        nodes=nodes,
        group_layers=(GroupLayerExport(name="compute", path=settings.group_layer_dir("compute"),
                                       export_id=50, clients=(LOOPBACK,)),),
        nfs_protocols=(3, 4) if rpcbind_running() else (4,),
        nfs_port=port, mnt_port=free_port(),
    )
    conf, log, pid = tmp_path / "ganesha.conf", tmp_path / "ganesha.log", tmp_path / "ganesha.pid"
    conf.write_text(render_ganesha(ctx))
    process = subprocess.Popen(
        ["ganesha.nfsd", "-F", "-f", str(conf), "-L", str(log), "-p", str(pid)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while STARTED not in (log.read_text() if log.exists() else ""):
            assert process.poll() is None, "ganesha exited:\n" + log.read_text()
            assert time.monotonic() < deadline, "ganesha did not start:\n" + log.read_text()
            time.sleep(0.1)
        time.sleep(2)
        assert process.poll() is None, "ganesha died after starting:\n" + log.read_text()
        yield Ganesha(root=tmp_path, port=port, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_ganesha_serves_the_rendered_exports(ganesha: Ganesha) -> None:
    root = ganesha.root
    for path, marker in [(root / "image" / "etc", "passwd"), (root / "state" / "node01", "mine"),
                         (root / "groups" / "compute", "layer")]:
        result = ganesha.ls(path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert marker in result.stdout


def test_a_node_dir_is_closed_to_other_clients(ganesha: Ganesha) -> None:
    # node02's dir is exported to 127.0.0.2 alone; this client connects from 127.0.0.1.
    result = ganesha.ls(ganesha.root / "state" / "node02")
    assert result.returncode != 0
    assert "theirs" not in result.stdout


def test_ganesha_accepted_the_config_without_complaint(ganesha: Ganesha) -> None:
    complaints = [line for line in ganesha.log.read_text().splitlines()
                  if ":CONFIG :" in line and ":EVENT :" not in line and "RADOS" not in line]
    assert complaints == []
