"""union=block end to end (issue 15 item 4): a node boots its image version's EROFS file and
its own ext4 file, both loop-mounted over NFS, unioned by kernel overlayfs on the node.

Boots (2, scenarios combined per boot):
  A. node01 (never booted, so `oneroot overlay` may edit its ext4 top from the server): its
     root is overlayfs over one erofs and one ext4 loop mount; the motd put from the server
     is seen (override), /etc/issue masked from the server is gone (mask); node02's own
     directory (its top.ext4) is refused to node01's NFS mount while node01's own is
     mounted (isolation); it writes /root/persist and deletes /etc/issue.net, then powers off.
     While its last stage is not `off`, `oneroot overlay ls` refuses with one error + hint.
  B. after `oneroot image exec` made lab@2 (its EROFS built as the version completed):
     node01 boots lab@2.erofs, sees the exec's change, and its write and deletion persist.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from oneroot.initramfs.busybox import fetch_busybox
from oneroot.inventory import database
from oneroot.inventory.events import EventStore
from oneroot.model.events import BootEvent
from oneroot.model.paths import Paths
from oneroot.ops.lab import LabCluster
from oneroot.testing.cache import suite_cache_dir
from oneroot.testing.labprobe import (
    PERSIST_AND_POWEROFF,
    PROBE_LIB,
    install_probe,
    sha256_of,
    wait_probe,
)

pytestmark = pytest.mark.e2e

BOOT_TIMEOUT = 420
SERVER = "10.0.0.1"

PROBE = "#!/bin/bash\n" + PROBE_LIB + r"""cp /usr/local/sbin/oneroot-bb /dev/shm/busybox
BB=/dev/shm/busybox  # a multi-call binary: its own name, or no applet is found
nfs() {  # nfs DIR: ok (mounted and unmounted again) or failed:REASON
  mkdir -p /dev/shm/m
  # nosharecache: a second mount of the root's own export with other options is a mount of
  # its own (with the shared cache the kernel refuses differing options)
  o="ro,vers=4.0,nosharecache,addr=__SERVER__,soft,timeo=20,retrans=1"
  if out=$($BB timeout -s KILL 15 $BB mount -t nfs -o "$o" "__SERVER__:$1" /dev/shm/m 2>&1)
  then $BB umount -f /dev/shm/m; echo ok
  else echo "failed:$(printf %s "$out" | tr -c 'A-Za-z0-9' _ | cut -c1-80)"; fi
}
say hostname="$(hostname)"
say root_fstype="$(findmnt -n -o FSTYPE /)"
say erofs_mounts="$(findmnt -n -t erofs | wc -l)"
say ext4_mounts="$(findmnt -n -t ext4 | wc -l)"
say backing="$(losetup -n -l -O BACK-FILE | sed 's|.*/||' | sort | tr '\n' ,)"
say motd="$(sha /etc/motd)"
say image_change="$(cat /etc/oneroot-image-change 2>/dev/null || echo none)"
if [ -e /etc/issue ]; then say issue=present; else say issue=missing; fi
say own_dir="$(nfs __OWN_DIR__)"
say other_dir="$(nfs __OTHER_DIR__)"
""" + PERSIST_AND_POWEROFF


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCluster]:
    workdir = tmp_path_factory.mktemp("blockroot")
    c = LabCluster(workdir=workdir, cache_dir=suite_cache_dir(), progress=print)
    c.prepare()
    c.add_nodes(2, extra=("--set", "union=block", "--set", "block_top_size=256M"))
    try:
        yield c
    finally:
        c.stop_verified()


def _record_off(c: LabCluster, node: str) -> None:
    """What `oneroot power off` records once the node's BMC says it is off (the lab VM has
    powered itself off: the test stands in for the BMC)."""
    paths = Paths(home=c.home)
    store = EventStore(database.locate(paths, paths.events_db))
    try:
        store.record([BootEvent(time=time.time(), kind="stage", node=node, stage="off")])
    finally:
        store.close()


def test_block_root_boots_persists_isolates_and_follows_image_exec(
        cluster: LabCluster) -> None:
    c = cluster
    image = c.workdir / "images" / c.image_name
    assert (image / "etc" / "issue").exists() and (image / "etc" / "issue.net").exists()
    c.start()  # serve's nfs apply: lab@1.erofs, node01's and node02's top.ext4
    top = c.node_dir("node01") / "top.ext4"
    assert top.is_file() and (c.home / "blocks" / "lab@1.erofs").is_file()
    probe = (PROBE.replace("__SERVER__", SERVER)
             .replace("__OWN_DIR__", str(c.node_dir("node01")))
             .replace("__OTHER_DIR__", str(c.node_dir("node02"))))
    install_probe(c, "node01", probe)
    c.oneroot("overlay", "put", "node01", "/usr/local/sbin/oneroot-bb",
              str(fetch_busybox(cache_dir=c.cache_dir).path), "--mode", "0755")
    motd = c.workdir / "motd"
    motd.write_text("node01's own motd\n")
    c.oneroot("overlay", "put", "node01", "/etc/motd", str(motd))
    c.oneroot("overlay", "mask", "node01", "/etc/issue")

    # Boot A.
    c.boot("node01")
    p = wait_probe(c, "node01", timeout=BOOT_TIMEOUT)
    assert p["hostname"] == ["node01"]
    assert p["root_fstype"] == ["overlay"], p["root_fstype"]
    assert p["erofs_mounts"] == ["1"] and p["ext4_mounts"] == ["1"]
    assert p["backing"] == ["lab@1.erofs,top.ext4,"], p["backing"]
    assert p["motd"] == [sha256_of(motd)] and p["issue"] == ["missing"]
    assert p["own_dir"] == ["ok"], p["own_dir"]
    assert p["other_dir"][0].startswith("failed"), p["other_dir"]
    assert p["persist"] == ["none"] and p["wrote"] == ["yes"] and p["deleted"] == ["yes"]

    # Its last stage is `runlevel`: the server will not touch its ext4 top.
    refused = c.oneroot("overlay", "ls", "node01", check=False)
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: node node01 may be running")
    assert lines[1].startswith("hint: power it off first")
    _record_off(c, "node01")
    listing = c.oneroot("overlay", "ls", "node01", "--json").stdout
    assert '"/root/persist"' in listing and '"/etc/issue.net"' in listing

    # A new version by image exec; node01 follows the channel at its next boot.
    c.oneroot("image", "exec", c.image_name, "--", "sh", "-c",
              "echo v2 > /etc/oneroot-image-change")
    assert (c.home / "blocks" / "lab@2.erofs").is_file()
    c.boot("node01")
    again = wait_probe(c, "node01", timeout=BOOT_TIMEOUT)
    assert again["backing"] == ["lab@2.erofs,top.ext4,"], again["backing"]
    assert again["image_change"] == ["v2"]
    assert again["persist"] == ["written_on_node01"] and again["issue_net"] == ["missing"]
    assert again["motd"] == [sha256_of(motd)] and again["issue"] == ["missing"]
    # Off again: the server reads what the node wrote (e2fsck -p replays its journal).
    _record_off(c, "node01")
    listing = c.oneroot("overlay", "ls", "node01", "--json").stdout
    assert '"/root/persist"' in listing and '"/etc/issue.net"' in listing
    subprocess.run(["e2fsck", "-fn", str(top)], check=True, capture_output=True)
