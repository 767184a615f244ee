"""The two-server lab's pieces that run without Ceph or QEMU: its options, the packages it
checks for, the writer's lines as read back, the image it writes, and how `lab status` sees
it. (The lab itself runs in tests/e2e/test_ceph_failover.py.)"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oneroot.errors import LabError
from oneroot.initramfs.busybox import Busybox
from oneroot.inventory import database
from oneroot.inventory.events import EventStore
from oneroot.model.events import BootEvent
from oneroot.model.paths import Paths
from oneroot.net import MacAddress
from oneroot.ops import labctl
from oneroot.ops.inventory import add_nodes, init_cluster, open_store
from oneroot.ops.labcontrol import LabPhase, new_control, read_control, write_control
from oneroot.ops.labha import MEMBERS, parse_lines, writer_image
from oneroot.ops.labharun import HA_PACKAGES, ha_dir, missing_ha_packages
from oneroot.ops.labstatus import LabStatus, lab_status
from oneroot.testing.postgres import PostgresServer


@pytest.mark.parametrize(("servers", "storage", "server", "firmware", "error"), [
    (2, "local", "namespace", "bios", "two lab servers share"),
    (1, "ceph", "namespace", "bios", "two lab servers share"),
    (2, "ceph", "vm", "bios", "runs its servers in namespaces"),
    (2, "ceph", "namespace", "uefi", "runs its servers in namespaces"),
    (3, "ceph", "namespace", "bios", "no lab with 3 server"),
    (2, "nfs", "namespace", "bios", "no lab with 2 server"),
])
def test_impossible_labs_are_refused_before_anything_starts(
        servers: int, storage: str, server: str, firmware: str, error: str) -> None:
    with pytest.raises(LabError, match=error) as caught:
        labctl.check_lab_options(server=server, firmware=firmware,  # type: ignore[arg-type]
                                 servers=servers, storage=storage)
    assert caught.value.hint


def test_missing_packages_are_named_by_package() -> None:
    assert missing_ha_packages(which=lambda _program: "/usr/bin/x") == []
    missing = missing_ha_packages(which=lambda program: None if program in (
        "keepalived", "ceph-mds") else "/usr/bin/x")
    assert missing == ["ceph-mds", "keepalived"]
    assert len(missing_ha_packages(which=lambda _program: None)) == len(HA_PACKAGES)


def test_lab_up_without_the_packages_is_one_error_and_a_hint(tmp_path: Path) -> None:
    """The real command, with a PATH on which none of Ceph's or keepalived's programs is:
    refused before any supervisor, namespace or file is made."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    workdir = tmp_path / "lab"
    done = subprocess.run(
        [sys.executable, "-m", "oneroot", "lab", "up", "--servers", "2", "--storage", "ceph",
         "--workdir", str(workdir)], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PATH": str(empty)}, check=False)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: the two-server lab needs packages that are not "
                               "installed: ceph-mon, ceph-mgr"), done.stderr
    assert "keepalived" in lines[0]
    assert lines[1].startswith("hint: apt-get install ceph-mon"), done.stderr
    assert "Traceback" not in done.stderr
    assert not workdir.exists()


def test_the_writers_lines_are_read_back_without_a_torn_last_line() -> None:
    text = "1 10.50\n2 10.61\n3 10.72\n4 10."
    assert parse_lines(text) == [(1, 10.50), (2, 10.61), (3, 10.72)]
    assert parse_lines(text + "5\n") == [(1, 10.50), (2, 10.61), (3, 10.72), (4, 10.5)]
    assert parse_lines("1 10.5") == []
    assert parse_lines("garbage\n\n1 2 3\nx 1.0\n5 y\n") == []


def test_the_writer_image_boots_busybox_into_the_writer(tmp_path: Path) -> None:
    fake = tmp_path / "busybox"
    fake.write_bytes(b"\x7fELF not really")
    root = tmp_path / "image"
    writer_image(root, Busybox(path=fake, package_version="1"))
    assert (root / "sbin/init").readlink() == Path("/bin/busybox")
    assert "/etc/writer.sh" in (root / "etc/inittab").read_text()
    script = (root / "etc/writer.sh").read_text()
    assert "conv=notrunc,fsync" in script and "sleep 0.1" in script
    for applet in ("ls", "tail", "dd", "sh"):  # what the script runs
        assert (root / "bin" / applet).readlink() == Path("busybox")
    proc = subprocess.run(["sh", "-n", str(root / "etc/writer.sh")], check=False)
    assert proc.returncode == 0


def test_the_two_servers_addresses_are_distinct_and_in_the_subnet() -> None:
    addresses = [a for m in MEMBERS for a in (m.host, m.service)]
    assert len(set(addresses)) == 4
    assert [m.name for m in MEMBERS] == ["a", "b"]


def test_a_two_server_lab_is_finished_once_up_and_shows_its_servers(tmp_path: Path) -> None:
    assert LabStatus(workdir="/w", phase=LabPhase.UP, servers=("a: …",)).finished is False
    ctl = new_control(tmp_path)
    ctl.phase = LabPhase.UP
    ctl.servers = ["a: host 10.96.0.4, service 10.96.0.112"]
    ctl.home = str(tmp_path / "ha" / "home-a")  # no inventory there: no stages, no error
    ctl.nodes = [labctl.LabNodeRecord(name="node01", firmware="bios", ephemeral=False,
                                      serial_log=str(tmp_path / "x.log"))]
    write_control(ctl)
    assert json.loads((tmp_path / "lab.json").read_text())["home"] == ctl.home
    again = read_control(tmp_path)
    assert again is not None and again.servers == ctl.servers
    status = lab_status(tmp_path)
    assert status.finished and status.servers == tuple(ctl.servers)
    assert status.as_json()["servers"] == ctl.servers
    assert status.nodes[0].stage == "never booted"


def test_lab_status_reads_the_stages_from_server_a_s_home_on_postgresql(
        tmp_path: Path, postgres_server: PostgresServer) -> None:
    """The two-server lab's nodes are in A's home, which points at PostgreSQL (no SQLite
    file): `lab status` shows their stages from there while the supervisor runs."""
    home = ha_dir(tmp_path) / "home-a"
    paths = Paths(home=home)
    init_cluster(paths, {"server_address": "10.96.0.4", "subnet": "10.96.0.0/24"},
                 db_url=postgres_server.new_schema_url())
    with contextlib.closing(open_store(paths)) as store:
        add_nodes(store, names="node01", macs=[MacAddress.parse("52:54:00:0e:01:01")],
                  start_ip=None, groups=(), overrides={})
    events = EventStore(database.locate(paths, paths.events_db))
    try:
        events.record([BootEvent(time=time.time(), kind="stage", node="node01",
                                 stage="init", detail={"message": "switched root"})])
    finally:
        events.close()
    assert not (home / "inventory.db").exists()
    ctl = new_control(tmp_path)
    ctl.phase, ctl.home, ctl.servers = LabPhase.UP, str(home), ["a: host 10.96.0.4"]
    ctl.nodes = [labctl.LabNodeRecord(name="node01", firmware="bios", ephemeral=False,
                                      serial_log=str(tmp_path / "x.log"))]
    write_control(ctl)
    assert lab_status(tmp_path).nodes[0].stage == "init"
