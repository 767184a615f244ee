"""Nodes boot through the masked view of a live root on nfs-ganesha (issue 11: the seed's
`server:/`), end to end. No other e2e module does: the lab's image is a directory outside the
state dir, exported as it is.

Here the lab image holds the state and group dirs, as the seed's `/` does, so `oneroot serve`
exports it through the view (all_squash; `/etc/shadow` a whiteout, `/root` emptied, the state
dir emptied but for each node's junction) and each node's own layer inside it. One lab, two
nodes booted together (fuse-overlayfs rw tops):

  node01  boots to multi-user and runs a probe: its root is the union, layer 1 is the view
          (`10.0.0.1:<image>`), shadow is not in the view, a file written in /root lands in
          its own layer on the server.
  node02  has, in its own layer, a directory `lib/systemd/system/` (what `dpkg-deb -x` of a
          package holding ./lib/ leaves in a merged-/usr tree): it hides the image's
          `/lib -> usr/lib`, so `/sbin/init -> /lib/systemd/systemd` leads nowhere. The
          initramfs must say so at its switch_root stage (reason, fix, a shell) instead of
          exec'ing switch_root into a kernel panic ("can't execute '/sbin/init'"): how the
          ganesha view looked unbootable in an earlier session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from oneroot.ops.lab import SERVER, LabCluster
from oneroot.testing.cache import suite_cache_dir
from oneroot.testing.labprobe import PROBE_LIB, install_probe, wait_probe

pytestmark = pytest.mark.e2e

BOOT_TIMEOUT = 480

PROBE = "#!/bin/bash\n" + PROBE_LIB + r"""
say hostname="$(hostname)" root_fstype="$(findmnt -n -o FSTYPE /)"
say layer1="$(findmnt -n -o SOURCE /run/oneroot/layers/1)"
if [ -e /run/oneroot/layers/1/etc/shadow ]; then say view_shadow=present
else say view_shadow=absent; fi
if [ -e /run/oneroot/layers/1/etc/passwd ]; then say view_passwd=present
else say view_passwd=absent; fi
echo "written on $(hostname)" > /root/persist && sync && say wrote=yes
say DONE
systemctl poweroff
"""
BROKEN_INIT = ("stage switch_root failed: the root's init does not resolve: /sbin/init -> "
               "/usr/sbin/init -> /lib/systemd/systemd: /lib/systemd/systemd is missing")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCluster]:
    c = LabCluster(workdir=tmp_path_factory.mktemp("ganesha-view"),
                   cache_dir=suite_cache_dir(), progress=print)
    c.prepare()
    c.oneroot("settings", "set", f"state_dir={image_of(c)}/var/state/systems",
              f"group_dir={image_of(c)}/var/state/groups")
    # no_timer_check: under TCG on a loaded machine the kernel may find no IO-APIC timer
    c.oneroot("group", "set", "default", "--set", "kernel_args=net.ifnames=0 no_timer_check")
    c.add_nodes(2)
    try:
        c.start()
        yield c
    finally:
        c.stop_verified()


def image_of(c: LabCluster) -> Path:
    return c.workdir / "images" / c.image_name


def upper_of(c: LabCluster, node: str) -> Path:
    return image_of(c) / "var/state/systems" / node / "upper"


def test_nodes_boot_through_the_ganesha_view(cluster: LabCluster) -> None:
    c = cluster
    conf = next((c.home / "run").rglob("ganesha.conf")).read_text()
    assert f'Path = "{c.home}/views/' in conf and "All_Squash" in conf, conf
    install_probe(c, "node01", PROBE)
    (upper_of(c, "node02") / "lib/systemd/system").mkdir(parents=True)
    for node in ("node01", "node02"):
        c.boot(node)

    values = wait_probe(c, "node01", timeout=BOOT_TIMEOUT)
    assert values["hostname"] == ["node01"]
    assert values["root_fstype"] == ["fuse.@fuse-overlayfs"], values
    assert values["layer1"] == [f"{SERVER}:{image_of(c)}"], values
    assert values["view_passwd"] == ["present"] and values["view_shadow"] == ["absent"], values
    assert values["wrote"] == ["yes"]
    assert (upper_of(c, "node01") / "root/persist").read_text() == "written on node01\n"

    vm = c.vms["node02"]
    vm.wait_for("oneroot: fix: ", timeout=BOOT_TIMEOUT)
    console = vm.serial_text()
    assert BROKEN_INIT in console, console[-3000:]
    assert "Kernel panic" not in console
