"""A UEFI node, end to end (issue 6, part 3): OVMF's own PXE client (no iPXE option ROM on the
NIC) asks DHCP as UEFI x64 (option 93 = 7), gets `ipxe.efi` over TFTP, iPXE fetches the node's
script over HTTP, and our initramfs unions the NFS layers under a tmpfs top and starts the
image's systemd.

Checks: the boot events show `ipxe.efi` served by TFTP to that node, then its script and kernel
by HTTP; the node reports every stage up to init; a file in its layer overrides the image's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from oneroot.ops.lab import LabCluster
from oneroot.testing.cache import suite_cache_dir
from oneroot.testing.labprobe import install_probe

pytestmark = pytest.mark.e2e
BOOTED = ["dhcp", "layers", "union", "switch_root", "init"]

BOOT_TIMEOUT = 480

PROBE = r"""#!/bin/bash
say() { echo "PROBE $*" > /dev/ttyS0; }
say hostname="$(hostname)"
say efi="$([ -d /sys/firmware/efi ] && echo yes || echo no)"
say root_fstype="$(findmnt -n -o FSTYPE /)"
say motd="$(sha256sum /etc/motd | cut -c1-64)"
say DONE
systemctl poweroff
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCluster]:
    if os.geteuid() != 0:
        pytest.skip("the lab creates network namespaces: run as root")
    if not Path("/usr/share/OVMF/OVMF_CODE_4M.fd").exists():
        pytest.skip("no OVMF (apt-get install ovmf)")
    workdir = tmp_path_factory.mktemp("uefi")
    c = LabCluster(workdir=workdir, cache_dir=suite_cache_dir(), progress=print)
    c.prepare()
    c.add_nodes(1, extra=("--ephemeral", "--set", "firmware=uefi"))
    try:
        c.start()
        yield c
    finally:
        c.stop_verified()


def _put(c: LabCluster, node: str, path: str, text: str, mode: str = "0644") -> None:
    local = c.workdir / "files" / path.strip("/").replace("/", "_")
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text(text)
    c.oneroot("overlay", "put", node, path, str(local), "--mode", mode)


def test_uefi_node_boots_through_ipxe_efi(cluster: LabCluster) -> None:
    c = cluster
    motd = "node01 booted by UEFI\n"
    _put(c, "node01", "/etc/motd", motd)
    install_probe(c, "node01", PROBE)

    vm = c.boot("node01")
    assert vm.firmware == "uefi"
    try:
        vm.wait_for(r"PROBE DONE", timeout=BOOT_TIMEOUT)
        vm.wait_powered_off(timeout=120)
    except Exception:
        print(vm.serial_text()[-6000:])
        print(c.serve_log.read_text()[-4000:])
        raise
    print(f"node01 (UEFI): probe done {vm.elapsed():.1f}s after power-on")
    probes = dict(re.findall(r"PROBE (\w+)=(\S*)", vm.serial_text()))
    assert probes["hostname"] == "node01"
    assert probes["efi"] == "yes"
    assert probes["root_fstype"] == "overlay"
    image_motd = c.workdir / "images" / c.image_name / "etc" / "motd"
    assert probes["motd"] == hashlib.sha256(motd.encode()).hexdigest()
    assert probes["motd"] != hashlib.sha256(image_motd.read_bytes()).hexdigest()

    conn = sqlite3.connect(c.home / "events.db")
    try:
        served = [(k, f) for (k, f) in conn.execute(
            "SELECT kind, file FROM events WHERE node='node01' AND kind IN "
            "('tftp.done', 'http.done') ORDER BY id")]
        stages = [s for (s,) in conn.execute(
            "SELECT stage FROM events WHERE node='node01' AND kind='stage' ORDER BY id")]
    finally:
        conn.close()
    # The firmware's PXE loaded ipxe.efi by TFTP before iPXE fetched anything by HTTP.
    assert served and served[0] == ("tftp.done", "ipxe.efi"), served
    assert any(k == "http.done" and Path(f).name == "vmlinuz" for k, f in served), served
    # The probe powers the node off before multi-user.target (which waits for it): no
    # `runlevel` report, unless systemd reached the target before the poweroff job replaced it.
    assert stages in (BOOTED, [*BOOTED, "runlevel"]), stages
    status = json.loads(c.oneroot("status", "--json").stdout)
    assert {n["node"]: n["stage"] for n in status["nodes"]}["node01"] == stages[-1]
