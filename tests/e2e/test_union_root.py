"""The seed's layered root, end to end (issue: union root part 1). QEMU nodes PXE-boot from
`oneroot serve` in a lab namespace, mount the image and their layers over NFS from
nfs-ganesha, union them under a tmpfs top with kernel overlayfs, and switch_root to systemd.

Boots (scenarios combined per boot):
  A. node01 and node02 together: node01 reaches its target through every stage; its layer's
     /etc/motd and a `c 0 0` mask apply on node01 only; image, group and node layers stack in
     order; node02 (a root shell) cannot mount node01's layer nor write the image, and no
     export gives it node01's SSH key or the server's /etc/shadow.
  B. node01 again: the write it made on its tmpfs top is gone; the server's dirs unchanged.
  C. node03 with a bad root=: stops at the failing stage with the reason, no kernel panic.

Each node runs a probe placed in its own layer with `oneroot overlay put`; the probe prints
`PROBE key=value` lines on the serial console and powers the node off.

The module runs twice: `client` (the initramfs unions the NFS layers) and `server` (issue 6's
server-side union: the server's overlayfs unions them and exports the merged tree to the node
alone; an ephemeral node mounts it read-only under its tmpfs top). In server mode each node
also has exactly one NFS mount and no fuse-overlayfs process.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from oneroot.ops.lab import LabCluster
from oneroot.testing.cache import suite_cache_dir
from oneroot.testing.labprobe import PROBE_LIB, install_probe, sha256_of, wait_probe

pytestmark = pytest.mark.e2e

BOOT_TIMEOUT = 420

COMMON = "#!/bin/bash\n" + PROBE_LIB + r"""me=$(hostname)
ip4=$(ip -4 -o addr show dev eth0 | sed -n 's/.* inet \([0-9.]*\).*/\1/p')
nfs() { mount -t nfs -o "$1,vers=4.2,addr=10.0.0.1,clientaddr=$ip4" "10.0.0.1:$2" "$3"; }
say hostname="$me"
say root_fstype="$(findmnt -n -o FSTYPE /)"
say motd="$(sha /etc/motd)"
say issue_net="$(sha /etc/issue.net)"
say layered="$(cat /etc/oneroot-layer-test 2>/dev/null || echo none)"
say group_only="$(cat /etc/oneroot-group-only 2>/dev/null || echo none)"
say machine_id="$(cat /etc/machine-id)"
say ssh_key="$(sha /etc/ssh/ssh_host_ed25519_key)"
say nfs_mounts="$(findmnt -n -t nfs,nfs4 | wc -l)"
say fuse_procs="$(fuse_pids | wc -l)"
"""

NODE01 = COMMON + r"""
if [ -e /root/throwaway ]; then say throwaway=survived; else say throwaway=gone; fi
echo "written on $me" > /root/throwaway && say wrote=yes
say DONE
systemctl poweroff
"""

NODE02 = COMMON + r"""
mkdir -p /mnt/other /mnt/image /mnt/pseudo
# node01's directory and (server mode) its merged tree: neither may give node02 node01's files.
other=refused
for dir in "{node01_dir}" "{node01_dir}/merged"; do
  if nfs ro "$dir" /mnt/other 2>/dev/null; then
    for f in upper/etc/motd etc/motd; do
      [ -r "/mnt/other/$f" ] && cat "/mnt/other/$f" > /dev/null 2>&1 && other=allowed
    done
    umount /mnt/other
  fi
done
say other_mount=$other
if nfs rw "{image}" /mnt/image 2>/dev/null; then
  if touch /mnt/image/oneroot-write-test 2>/dev/null; then say image_write=allowed
  else say image_write=refused; fi
  umount /mnt/image
else
  say image_write=refused
fi
if nfs ro / /mnt/pseudo 2>/dev/null; then
  find /mnt/pseudo \( -name 'ssh_host_*_key' -o -name shadow -o -name 'shadow-' \) \
      -type f 2>/dev/null | while read -r f; do say reachable="$(sha "$f")"; done
  umount /mnt/pseudo
fi
say DONE
systemctl poweroff
"""


def tree(root: Path) -> dict[str, tuple[int, str]]:
    """Every entry under `root`: mode and content hash (devices and links by their target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            digest = (sha256_of(path) if path.is_file() and not path.is_symlink()
                      else os.readlink(path) if path.is_symlink() else str(st.st_rdev))
            out[str(path.relative_to(root))] = (st.st_mode, digest)
    return out


@pytest.fixture(scope="module")
def cluster(union: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCluster]:
    workdir = tmp_path_factory.mktemp(f"union-{union}")
    c = LabCluster(workdir=workdir, cache_dir=suite_cache_dir(), progress=print)
    c.prepare()
    mode = ("--set", f"union={union}")
    c.oneroot("group", "add", "compute", "--set", "group_layer=true")
    c.add_nodes(2, extra=("--ephemeral", *mode))
    c.oneroot("node", "set", "node01", "--groups", "default,compute")
    c.add_nodes(1, first=3, extra=("--ephemeral", *mode, "--set",
                                   "kernel_args=root=10.0.0.1:/srv:rw;10.0.0.1:/x"))
    try:
        c.start()
        yield c
    finally:
        c.stop_verified()


def test_layers_isolation_and_throwaway_top(cluster: LabCluster, union: str) -> None:
    c = cluster
    image = c.workdir / "images" / c.image_name
    (image / "etc" / "oneroot-layer-test").write_text("image\n")
    group = c.group_dir / "compute" / "etc"
    group.mkdir(parents=True, exist_ok=True)
    (group / "oneroot-layer-test").write_text("group\n")
    (group / "oneroot-group-only").write_text("group-only\n")
    motd = c.workdir / "motd"
    motd.write_text("node01's own motd\n")
    c.oneroot("overlay", "put", "node01", "/etc/motd", str(motd))
    node_layer = c.workdir / "layer-test"
    node_layer.write_text("node\n")
    c.oneroot("overlay", "put", "node01", "/etc/oneroot-layer-test", str(node_layer))
    c.oneroot("overlay", "mask", "node01", "/etc/issue.net")
    install_probe(c, "node01", NODE01)
    install_probe(c, "node02", NODE02.replace("{node01_dir}", str(c.node_dir("node01")))
                   .replace("{image}", str(image)))
    before = tree(c.node_dir("node01"))

    # Boot A: both nodes at once.
    c.boot("node01")
    c.boot("node02")
    p1 = wait_probe(c, "node01", timeout=BOOT_TIMEOUT)
    p2 = wait_probe(c, "node02", timeout=BOOT_TIMEOUT)

    assert p1["hostname"] == ["node01"] and p2["hostname"] == ["node02"]
    assert p1["root_fstype"] == ["overlay"] == p2["root_fstype"]
    assert p1["fuse_procs"] == ["0"] == p2["fuse_procs"]
    if union == "server":  # the merged tree, read-only under the tmpfs top
        assert p1["nfs_mounts"] == ["1"] == p2["nfs_mounts"]
        assert "nfs.union.boot_remount node=node01" in c.serve_log.read_text()
    else:  # image, group and node layers for node01; image and node layers for node02
        assert p1["nfs_mounts"] == ["3"] and p2["nfs_mounts"] == ["2"]
    assert p1["motd"] == [sha256_of(motd)]
    assert p2["motd"] == [sha256_of(image / "etc" / "motd")]
    assert p1["issue_net"] == ["missing"]
    assert p2["issue_net"] == [sha256_of(image / "etc" / "issue.net")] != ["missing"]
    assert p1["layered"] == ["node"] and p1["group_only"] == ["group-only"]
    assert p2["layered"] == ["image"] and p2["group_only"] == ["none"]
    assert p1["machine_id"] != p2["machine_id"]
    node01_key = sha256_of(c.node_dir("node01") / "upper/etc/ssh/ssh_host_ed25519_key")
    assert p1["ssh_key"] == [node01_key] and p2["ssh_key"] != [node01_key]
    assert p1["throwaway"] == ["gone"] and p1["wrote"] == ["yes"]
    # Isolation, from a root shell on node02.
    assert p2["other_mount"] == ["refused"]
    assert p2["image_write"] == ["refused"]
    reachable = set(p2.get("reachable", []))
    assert node01_key not in reachable
    assert sha256_of(Path("/etc/shadow")) not in reachable
    assert not (image / "oneroot-write-test").exists()

    # Every stage reached the server, in order.
    status = json.loads(c.oneroot("status", "--json").stdout)
    stages = {n["node"]: n["stage"] for n in status["nodes"]}
    # The probes power their nodes off before multi-user.target (which waits for them): no
    # `runlevel` report, unless systemd reached it before the poweroff job replaced it.
    assert {stages["node01"], stages["node02"]} <= {"init", "runlevel"}, stages
    conn = sqlite3.connect(c.home / "events.db")
    try:
        reported = [s for (s,) in conn.execute(
            "SELECT stage FROM events WHERE node='node01' AND kind='stage' ORDER BY id")]
    finally:
        conn.close()
    booted = ["dhcp", "layers", "union", "switch_root", "init"]
    assert reported in (booted, [*booted, "runlevel"]), reported

    # Boot B: node01 again; its tmpfs top was thrown away, its directory never changed.
    c.boot("node01")
    again = wait_probe(c, "node01", timeout=BOOT_TIMEOUT)
    assert again["throwaway"] == ["gone"]
    after = tree(c.node_dir("node01"))
    if union == "server":
        # The server's overlayfs (nfs_export=on) copies a lower directory up, empty, when it
        # hands out its file handle, and indexes it under work/: no file is added or changed.
        before, after = ({k: v for k, v in t.items()
                          if not k.startswith("work/") and not stat.S_ISDIR(v[0])}
                         for t in (before, after))
    assert after == before


def test_bad_root_stops_at_its_stage(cluster: LabCluster) -> None:
    vm = cluster.boot("node03")
    try:
        vm.wait_for(r"oneroot: stage \w+ failed", timeout=BOOT_TIMEOUT)
        vm.wait_for(r"oneroot:\w+# ", timeout=30)
    except Exception:
        print(vm.serial_text()[-5000:])
        raise
    text = vm.serial_text()
    assert "rw below the top layer" in text
    assert "Kernel panic" not in text
    vm.stop()
    status = json.loads(cluster.oneroot("status", "--json").stdout)
    assert {n["node"]: n["stage"] for n in status["nodes"]}["node03"] == "failed"
