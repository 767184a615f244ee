"""A hostile node (issue 12): root on node02 attacks node01, the group layers and the
server, and fails each time; nothing of anybody else's is lost.

One boot. node02 is ephemeral (its own layer exported read-only) and a member of group
`shared` (a group layer, exported `root_squash`); node01 is powered off, the best case for an
address thief. node02's probe, root from systemd, copies a static busybox and itself to /dev/shm
and tries:

  own address    its own boot script over HTTP (the network works); NFS mounts of node01's
                 layer and of group `private` (node02 is not a member): refused; its own
                 layer mounted rw: writes refused; group `shared`: a root-only file is
                 unreadable (root squashed), a world-readable one is read
  IP takeover    node01's address added next to its own, the server reached from it (a route
                 with `src`): HTTP, an NFS mount of node01's layer, a forged stage report for
                 node01, and gratuitous ARP claiming the address: all dropped
The MAC spoof (node01's MAC as well) is tested on the lab bridge in namespaces
(tests/integration/test_lab_bridge_guard.py): in a guest, every network tool run while its
MAC is spoofed hung on its own unreachable NFS root.

Then the server's view: node01's layer and the group layers unchanged, no stage recorded for
node01, its neighbour entry still node01's MAC, the inventory as it was, serve answering.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from oneroot.initramfs.busybox import fetch_busybox
from oneroot.ops.lab import LabCluster, node_mac
from oneroot.testing.cache import suite_cache_dir
from oneroot.testing.labprobe import PROBE_LIB, install_probe, wait_probe

pytestmark = pytest.mark.e2e

BOOT_TIMEOUT = 420
SERVER, NODE01, NODE02 = "10.0.0.1", "10.0.0.12", "10.0.0.13"  # LabCluster.add_nodes
SECRET = "node01's secret, never node02's\n"

ATTACK = r"""
BB=/dev/shm/busybox
S=__SERVER__ V=__NODE01__
mkdir -p /dev/shm/m
http() {  # http PATH [POST-DATA]: ok or failed
  if [ -n "$2" ]; then set -- --post-data "$2" "http://$S:8080$1"
  else set -- "http://$S:8080$1"; fi
  if $BB timeout -s KILL 6 $BB wget -q -O /dev/shm/out "$@" 2>/dev/null
  then echo ok; else echo failed; fi
}
nfs() {  # nfs DIR OPTS: ok (mounted at /dev/shm/m) or failed
  if $BB timeout -s KILL 15 $BB mount -t nfs -o "$2,addr=$S,soft,timeo=20,retrans=1" \
      "$S:$1" /dev/shm/m 2>/dev/null; then echo ok; else echo failed; fi
}
release() { $BB umount -f /dev/shm/m 2>/dev/null; true; }

$BB ping -c 1 -W 2 $S >/dev/null 2>&1
SMAC=$($BB ip neigh show $S dev eth0 | $BB sed -n 's/.*lladdr \([0-9a-f:]*\).*/\1/p')
say server_mac="$SMAC"
# The thief keeps the server's MAC (iproute2's ip: busybox's has no `neigh replace`): ARP
# sent from a stolen address would be dropped, and node02's own root would lose the server.
ip neigh replace $S lladdr "$SMAC" dev eth0 nud permanent
say server_neigh="$(ip neigh show $S dev eth0 | tr ' ' _)"
case "$(ip neigh show $S dev eth0)" in
*PERMANENT*) ;;
*) say DONE; systemctl poweroff; exit 1 ;;
esac

# -- from its own address
say own_http="$(http /boot/node02.ipxe)"
say node01_mount="$(nfs __NODE01_DIR__ rw,vers=4.0)"; release
say private_mount="$(nfs __PRIVATE_DIR__ ro,vers=4.0)"; release
say shared_mount="$(nfs __SHARED_DIR__ ro,vers=4.0)"
if $BB cat /dev/shm/m/etc/shared-secret >/dev/null 2>&1; then say shared_secret=read
else say shared_secret=refused; fi
say shared_public="$($BB cat /dev/shm/m/etc/shared-public 2>/dev/null || echo none)"
release
say own_mount="$(nfs __NODE02_DIR__ rw,vers=4.0)"
if $BB touch /dev/shm/m/upper/written-by-node02 2>/dev/null; then say own_write=ok
else say own_write=refused; fi
release

# -- IP takeover, own MAC
$BB ip addr add $V/32 dev eth0
$BB ip route add $S/32 dev eth0 src $V
say takeover_http="$(http /boot/node01.ipxe)"
say takeover_mount="$(nfs __NODE01_DIR__ rw,vers=4.1)"; release
say takeover_report="$(http /api/v1/report 'stage=failed&status=failed&message=forged')"
$BB arping -U -c 2 -s $V -I eth0 $S >/dev/null 2>&1
say takeover_arp=sent

$BB ip route del $S/32 dev eth0 src $V
$BB ip addr del $V/32 dev eth0
say restored_http="$(http /boot/node02.ipxe)"
say DONE
systemctl poweroff
"""


def _probe(c: LabCluster) -> str:
    script = ATTACK
    for key, value in {"__SERVER__": SERVER, "__NODE01__": NODE01,
                       "__NODE01_DIR__": str(c.node_dir("node01")),
                       "__NODE02_DIR__": str(c.node_dir("node02")),
                       "__PRIVATE_DIR__": str(c.group_dir / "private"),
                       "__SHARED_DIR__": str(c.group_dir / "shared")}.items():
        script = script.replace(key, value)
    # The attack runs from tmpfs, with a static busybox.
    return ("#!/bin/bash\n" + PROBE_LIB
            + "cp /usr/local/sbin/oneroot-bb /dev/shm/busybox\n"
            + "cat > /dev/shm/attack <<'ATTACK_EOF'\n" + PROBE_LIB + script + "ATTACK_EOF\n"
            + "exec bash /dev/shm/attack\n")


def tree_digest(root: Path) -> dict[str, str]:
    """Every entry under `root`: its type, mode and, for files, content hash."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(root))
        data = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[rel] = f"{st.st_mode:o}:{st.st_uid}:{data}"
    return out


@dataclass
class Attack:
    c: LabCluster
    probe: dict[str, list[str]]
    before: dict[str, dict[str, str]]
    inventory_before: str

    def one(self, key: str) -> str:
        values = self.probe.get(key)
        assert values is not None and len(values) == 1, (key, values)
        return values[0]


def _layers(c: LabCluster) -> dict[str, Path]:
    return {"node01": c.node_dir("node01"), "private": c.group_dir / "private",
            "shared": c.group_dir / "shared"}


@pytest.fixture(scope="module")
def attack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attack]:
    workdir = tmp_path_factory.mktemp("hostile")
    c = LabCluster(workdir=workdir, cache_dir=suite_cache_dir(), progress=print)
    try:
        c.prepare()
        c.oneroot("group", "add", "private", "--set", "group_layer=true")
        c.oneroot("group", "add", "shared", "--set", "group_layer=true")
        c.add_nodes(1)
        c.add_nodes(1, first=2, extra=("--ephemeral",))
        assert [str(c.node_address(n)) for n in ("node01", "node02")] == [NODE01, NODE02]
        c.oneroot("node", "set", "node01", "--groups", "default,private")
        c.oneroot("node", "set", "node02", "--groups", "default,shared")
        for group, name, mode in (("private", "private-file", 0o644),
                                  ("shared", "shared-public", 0o644),
                                  ("shared", "shared-secret", 0o600)):
            path = c.group_dir / group / "etc" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{name}\n")
            path.chmod(mode)
        c.start()
        secret = c.node_dir("node01") / "upper" / "root" / "secret"
        secret.parent.mkdir(parents=True, exist_ok=True)
        secret.write_text(SECRET)
        install_probe(c, "node02", _probe(c))
        c.oneroot("overlay", "put", "node02", "/usr/local/sbin/oneroot-bb",
                  str(fetch_busybox(cache_dir=c.cache_dir).path), "--mode", "0755")
        before = {name: tree_digest(path) for name, path in _layers(c).items()}
        inventory = c.oneroot("inventory", "export").stdout
        c.boot("node02")
        probe = wait_probe(c, "node02", timeout=BOOT_TIMEOUT)
        print(json.dumps(probe, indent=1))
        yield Attack(c=c, probe=probe, before=before, inventory_before=inventory)
    finally:
        c.stop_verified()


def test_node02_reaches_the_server_as_itself(attack: Attack) -> None:
    assert "PERMANENT" in attack.one("server_neigh")  # else the attacks did not run
    assert attack.one("own_http") == "ok"
    assert attack.one("restored_http") == "ok"  # and again after the attacks


def test_ip_takeover_with_its_own_mac_fails(attack: Attack) -> None:
    assert attack.one("takeover_http") == "failed"
    assert attack.one("takeover_mount") == "failed"
    assert attack.one("takeover_report") == "failed"
    lab = attack.c.lab
    assert lab is not None
    neighbour = lab.run_in_ns(["ip", "neigh", "show", NODE01, "dev", lab.bridge]).stdout
    assert f"lladdr {node_mac(1)} PERMANENT" in neighbour  # the forged ARP moved nothing
    assert _dropped(attack, rf"ip saddr != {{ 0\.0\.0\.0, {re.escape(NODE02)} }}") > 0


def _dropped(attack: Attack, rule: str) -> int:
    """The packets the lab bridge's guard rule `rule` (a regex) dropped."""
    lab = attack.c.lab
    assert lab is not None
    rules = lab.run_in_ns(["nft", "list", "table", "bridge", "oneroot_lab"]).stdout
    found = re.search(rule + r" counter packets (\d+)", rules)
    assert found is not None, rules
    return int(found.group(1))


def test_other_nodes_and_groups_exports_are_refused(attack: Attack) -> None:
    assert attack.one("node01_mount") == "failed"
    assert attack.one("private_mount") == "failed"


def test_ephemeral_layer_is_read_only_and_group_layer_squashes_root(attack: Attack) -> None:
    assert attack.one("own_mount") == "ok"
    assert attack.one("own_write") == "refused"
    assert not (attack.c.node_dir("node02") / "upper" / "written-by-node02").exists()
    assert attack.one("shared_mount") == "ok"
    assert attack.one("shared_public") == "shared-public"
    assert attack.one("shared_secret") == "refused"


def test_forged_stage_reports_are_ignored(attack: Attack) -> None:
    status = json.loads(attack.c.oneroot("status", "--json").stdout)
    stages = {n["node"]: n.get("stage") for n in status["nodes"]}
    assert stages["node01"] == "never booted", stages
    assert "stage.report node=node01" not in attack.c.serve_log.read_text()


def test_nothing_was_lost(attack: Attack) -> None:
    c = attack.c
    after = {name: tree_digest(path) for name, path in _layers(c).items()}
    assert after == attack.before
    assert (c.node_dir("node01") / "upper" / "root" / "secret").read_text() == SECRET
    assert c.oneroot("inventory", "export").stdout == attack.inventory_before
    assert c.lab is not None
    served = c.lab.run_in_ns(["curl", "-fsS", "--max-time", "5",
                              f"http://{SERVER}:8080/boot/node01.ipxe"], check=False)
    assert served.returncode == 0 and "#!ipxe" in served.stdout
    assert c.serve_proc is not None and c.serve_proc.poll() is None
