"""The persistent rw NFS top, runlevels and "install once, every node has it" (issue 5),
end to end. The nodes are NOT ephemeral: their own directory is the rw top of the union, served
by fuse-overlayfs in the initramfs (lower = the image over NFS ro, upper/work = the node's dir
over NFS rw).

Four boots, two rounds of node01 + node02 together:
  round 1  node01 boots `computenode` (a target made from the inventory's runlevel), node02 the
           image's default: a unit of computenode is active on node01 only, a unit of the default
           on node02 only. node01 writes /root/persist and deletes /etc/issue, runs `sync`; the
           server's upper/ then holds the file and a `c 0 0` whiteout (checked while node01
           waits), then node01 `systemctl reboot`s and both are still there.
  between  the server edits node01's upper/etc/motd in place; `oneroot image exec` installs
           `tree` into a new version of the image, which both nodes follow.
  round 2  node01 sees the new motd, its file and its whiteout; both nodes run `tree`; neither
           node's upper/ holds it.

The module runs twice: `client` as above, and `server` (issue 6's server-side union: the
server's overlayfs unions the image and the node's upper/ and exports the merged tree rw to the
node alone; the node has one NFS mount and no fuse-overlayfs process, and its deletions are
`c 0 0` whiteouts at once).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from oneroot.ops.lab import LabCluster
from oneroot.testing.cache import suite_cache_dir
from oneroot.testing.labprobe import install_probe, sha256_of, wait_probe

pytestmark = pytest.mark.e2e

BOOT_TIMEOUT = 480
PACKAGE, PACKAGE_FILE = "tree", "usr/bin/tree"

CLI = ("from oneroot.cli.main import main\n"
       "raise SystemExit(main())\n")

MARKER_UNIT = """[Unit]
Description=oneroot e2e: a unit of the {which} runlevel

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
"""

PROBE = r"""#!/bin/bash
say() { echo "PROBE $*" > /dev/ttyS0; }
sha() { if [ -e "$1" ]; then sha256sum "$1" | cut -c1-64; else echo missing; fi; }
round=$(cat /etc/oneroot-e2e-round 2>/dev/null || echo 0)
me=$(hostname)
say hostname="$me" round="$round"
say root_fstype="$(findmnt -n -o FSTYPE /)"
argv0s() { for p in /proc/[0-9]*; do tr '\0' '\n' 2>/dev/null < "$p/cmdline" | head -n 1; done; }
say fuse_argv0="$(argv0s | grep -c '^@fuse-overlayfs$')"
say fuse_procs="$(argv0s | grep -c 'fuse-overlayfs$')"
say nfs_mounts="$(findmnt -n -t nfs,nfs4 | wc -l)"
say compute="$(systemctl is-active e2e-compute.service)"
say default="$(systemctl is-active e2e-default.service)"
say unit="$(grep -o 'systemd\.unit=[^ ]*' /proc/cmdline || echo none)"
say motd="$(sha /etc/motd)"
say persist="$(tr ' ' _ < /root/persist 2>/dev/null || echo none)"
if [ -e /etc/issue ]; then say issue=present; else say issue=gone; fi
if tree -L 1 /etc >/dev/null 2>&1; then say tree=runs; else say tree=missing; fi
if [ "$round" = 1 ] && [ "$me" = node01 ]; then
  echo "written on $me" > /root/persist
  if rm /etc/issue 2>/dev/ttyS0; then say rm=ok; else say rm=failed; fi
  sync
  say synced=yes
  sleep 15  # the test looks at the server's upper/ now
  say DONE
  systemctl reboot
else
  say DONE
  systemctl poweroff
fi
"""


def oneroot_cli(c: LabCluster, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-c", CLI, "--home", str(c.home), *args], text=True,
                          capture_output=True, timeout=900)
    print(done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr
    return done


def any_whiteout(directory: Path, name: str) -> bool:
    """A `c 0 0` device, or fuse-overlayfs's fallback: an empty `.wh.NAME` file."""
    wh = directory / f".wh.{name}"
    return is_whiteout(directory / name) or (wh.is_file() and wh.stat().st_size == 0)


def is_whiteout(path: Path) -> bool:
    if not path.exists() and not path.is_symlink():
        return False
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


@pytest.fixture(scope="module")
def cluster(union: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCluster]:
    workdir = tmp_path_factory.mktemp(f"rwtop-{union}")
    c = LabCluster(workdir=workdir, cache_dir=suite_cache_dir(), progress=print)
    c.prepare()
    c.oneroot("runlevel", "add", "computenode", "--service", "e2e-compute",
              "--description", "oneroot e2e compute node")
    c.add_nodes(2, extra=("--set", f"union={union}"))
    c.oneroot("node", "set", "node01", "--set", "runlevel=computenode")
    try:
        c.start()
        yield c
    finally:
        c.stop_verified()


def _install(c: LabCluster) -> None:
    image = c.workdir / "images" / c.image_name
    units = image / "etc/systemd/system"
    (units / "e2e-compute.service").write_text(MARKER_UNIT.format(which="computenode"))
    (units / "e2e-default.service").write_text(MARKER_UNIT.format(which="default"))
    (units / "multi-user.target.d").mkdir(exist_ok=True)
    (units / "multi-user.target.d/e2e-default.conf").write_text(
        "[Unit]\nWants=e2e-default.service\n")
    oneroot_cli(c, "runlevel", "apply")
    target = (units / "computenode.target").read_text()
    assert "Wants=e2e-compute.service" in target and "AllowIsolate=yes" in target
    for node in ("node01", "node02"):
        install_probe(c, node, PROBE, targets=("multi-user", "computenode"))


def test_rw_top_runlevels_and_image_exec(cluster: LabCluster, union: str) -> None:
    c = cluster
    image = c.workdir / "images" / c.image_name
    upper1 = c.node_dir("node01") / "upper"
    upper2 = c.node_dir("node02") / "upper"
    _install(c)
    assert (image / "etc/issue").is_file()

    # Round 1: node01 in computenode, node02 in the default; node01 writes, deletes, syncs.
    (image / "etc/oneroot-e2e-round").write_text("1\n")
    c.boot("node01")
    c.boot("node02")
    vm1 = c.vms["node01"]
    try:
        vm1.wait_for(r"PROBE synced=yes", timeout=BOOT_TIMEOUT)
    except Exception:
        print(vm1.serial_text()[-8000:])
        raise
    # After `sync` on the node, before any shutdown: on the server.
    print(subprocess.run(["ls", "-la", upper1, upper1 / "etc"], capture_output=True,
                         text=True).stdout)
    assert (upper1 / "root/persist").read_text() == "written on node01\n"
    assert any_whiteout(upper1 / "etc", "issue")
    if union == "server":  # the server's overlayfs writes the `c 0 0` device itself
        assert is_whiteout(upper1 / "etc/issue")
    # While node01 runs, fuse-overlayfs owns its layer and may have written its `.wh.issue`
    # fallback (it skips mknod after renameat2(RENAME_WHITEOUT) fails on NFS); the server
    # turns that into the `c 0 0` device when the node next boots (checked in round 2).
    # node01's probe ends with `systemctl reboot` (-no-reboot: the VM exits).
    p1 = wait_probe(c, "node01", timeout=BOOT_TIMEOUT)
    p2 = wait_probe(c, "node02", timeout=BOOT_TIMEOUT)
    print(p1, p2, sep="\n")
    assert "reboot: Restarting system" in vm1.serial_text() or "Restarting" in vm1.serial_text()
    assert p1["hostname"] == ["node01"] and p2["hostname"] == ["node02"]
    if union == "server":  # one plain NFS root: the merged tree
        assert p1["root_fstype"] == ["nfs4"] == p2["root_fstype"]
        assert p1["nfs_mounts"] == ["1"] == p2["nfs_mounts"]
        assert p1["fuse_procs"] == ["0"] == p2["fuse_procs"]
    else:
        assert p1["root_fstype"] == ["fuse.@fuse-overlayfs"] == p2["root_fstype"]
        assert p1["fuse_argv0"] == ["1"]
    assert p1["compute"] == ["active"] and p1["default"] == ["inactive"]
    assert p1["unit"] == ["systemd.unit=computenode.target"] and p2["unit"] == ["none"]
    assert p1["rm"] == ["ok"]
    assert p2["compute"] == ["inactive"] and p2["default"] == ["active"]
    assert p1["persist"] == ["none"] and p1["issue"] == ["present"]
    assert p2["issue"] == ["present"]
    # Still so after the node's shutdown and reboot.
    assert (upper1 / "root/persist").read_text() == "written on node01\n"
    assert any_whiteout(upper1 / "etc", "issue")
    assert (image / "etc/issue").is_file()

    # Between the rounds: a server-side edit of node01's layer, a package into the image.
    motd = upper1 / "etc/motd"
    motd.write_text("edited on the server between boots\n")
    oneroot_cli(c, "image", "exec", c.image_name, "--", "sh", "-c",
                f"apt-get update -qq && apt-get install -y --no-install-recommends {PACKAGE}")
    # It made a new version (issue 14): the nodes follow `image=NAME` onto it at their next
    # boot; the version they run now never changes.
    versions = json.loads(oneroot_cli(c, "image", "versions", c.image_name, "--json").stdout)
    assert [v["ref"] for v in versions["versions"]] == [f"{c.image_name}@1",
                                                         f"{c.image_name}@2"]
    assert not (image / PACKAGE_FILE).exists()
    old_root, image = image, Path(versions["versions"][-1]["root"])
    assert (image / PACKAGE_FILE).is_file()
    status = json.loads(oneroot_cli(c, "status", "--json").stdout)
    assert {(n["image"], n["next_image"]) for n in status["nodes"]} == {
        (c.image_name, f"{c.image_name}@2")}  # running the image as it was, lab@2 next
    logs = sorted((c.home / "images" / f"{c.image_name}.changes").glob("*.txt"))
    assert logs and f"A /{PACKAGE_FILE}" in logs[-1].read_text()
    assert not (image / "usr/sbin/policy-rc.d").exists()
    assert not any(line.split()[1] == str(image / "proc")
                   for line in Path("/proc/self/mounts").read_text().splitlines())

    # Round 2: the reboot keeps node01's state, shows the server's edit, and the package.
    # A version is immutable and shares unchanged files' inodes with its parent: replace the
    # file (a new inode), never write into it, or lab@1 would change too.
    (image / "etc/.oneroot-e2e-round.new").write_text("2\n")
    os.replace(image / "etc/.oneroot-e2e-round.new", image / "etc/oneroot-e2e-round")
    c.boot("node01")
    c.boot("node02")
    q1 = wait_probe(c, "node01", timeout=BOOT_TIMEOUT)
    q2 = wait_probe(c, "node02", timeout=BOOT_TIMEOUT)
    print(q1, q2, sep="\n")
    assert q1["round"] == ["2"]
    assert q1["motd"] == [sha256_of(motd)]
    assert q2["motd"] == [sha256_of(image / "etc/motd")] != q1["motd"]
    assert q1["persist"] == ["written_on_node01"] and q1["issue"] == ["gone"]
    assert q2["issue"] == ["present"]
    assert q1["tree"] == ["runs"] and q2["tree"] == ["runs"]
    assert (old_root / "etc/oneroot-e2e-round").read_text() == "1\n"  # lab@1 unchanged
    status = json.loads(oneroot_cli(c, "status", "--json").stdout)
    assert {n["image"] for n in status["nodes"]} == {f"{c.image_name}@2"}
    if union == "server":
        assert q1["nfs_mounts"] == ["1"] and q1["fuse_procs"] == ["0"]
        assert c.serve_log.read_text().count("nfs.union.boot_remount node=node01") >= 2
    for upper in (upper1, upper2):
        assert not (upper / PACKAGE_FILE).exists()
        assert not any(p.name.startswith("tree") for p in (upper / "usr/bin").glob("*")) \
            if (upper / "usr/bin").is_dir() else True
    # One whiteout format on the server: by round 2 node01's deletion is a `c 0 0` device.
    assert is_whiteout(upper1 / "etc/issue")
    assert not (upper1 / "etc/.wh.issue").exists()
