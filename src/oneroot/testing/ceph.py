"""The tests' Ceph: the session's one cluster (`ceph_cluster`, in a lab namespace of its own:
`ceph_in_lab`), and helpers to put a ganesha-ceph inventory and an image in it. The cluster
itself is `oneroot.lab.ceph` (the lab runs it too).

One Ceph per test run: every test that needs one (integration and QEMU alike) asks for
`ceph_cluster`; tests/conftest.py marks them `ceph` and scripts/test runs them all in one
stage of their own, between the integration and the QEMU stages, so Ceph starts once and
never idles beside the other QEMU tests. Sharing rules for those tests: each works in a
CephFS directory of its own (a unique name), removes its ganesha members from
the grace database and evicts its killed clients' sessions, and retires its lab clients
(`retire`: the next one reuses the address); a module that starts late checks the cluster
is still healthy (`CephCluster.wait_healthy`).

Run by hand (the docs): `python -m oneroot.testing.ceph [--netns NS] [--address A]` starts one,
prints its config path, and stops it on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from oneroot.lab import Lab
from oneroot.lab.ceph import DAEMONS, FS_NAME, CephCluster, CephError, CephSizes
from oneroot.model import NfsServerKind, Settings
from oneroot.model.inventory import Inventory
from oneroot.model.paths import Paths
from oneroot.ops.inventory import commit, init_cluster, open_store
from oneroot.ops.nfs_serving import ganesha_files
from oneroot.testing.inventory import layer_group, make_inventory, make_node
from oneroot.testing.netns import STATE_DIR

__all__ = ["CEPH_FIXTURE", "CEPH_SUBNET", "DAEMONS", "FS_NAME", "CephCluster", "CephError",
           "CephSizes", "ceph_cluster", "ceph_in_lab", "ceph_inventory", "retire",
           "serve_ganesha_ceph", "tiny_image", "wait_log"]

CEPH_SUBNET = "10.96.0.0/24"
CEPH_FIXTURE = "ceph_cluster"  # the tests that use it are marked `ceph` (tests/conftest.py)


def retire(lab: Lab, netns: str) -> None:
    """Take a test's server or node off the session's shared network for good: SIGKILL to
    everything in its namespace, its address removed and its link down (the next test
    reuses the address). The namespace itself goes with the lab at the end of the run."""
    pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True,
                          check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    lab.run_in_ns(["ip", "addr", "flush", "dev", "eth0"], netns=netns, check=False)
    lab.run_in_ns(["ip", "link", "set", "eth0", "down"], netns=netns, check=False)


def tiny_image(root: Path) -> None:
    """An image tree in CephFS (as `oneroot image create` leaves one, much smaller)."""
    for sub in ("etc", "bin", "usr/lib", "var/lib"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "etc/os-release").write_text('PRETTY_NAME="oneroot test image in CephFS"\n')
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")


def ceph_inventory(base: Path, *, mount: Path, image: Path, conf: Path,
                   server: ipaddress.IPv4Address) -> Inventory:
    """nfs_server=ganesha-ceph on the session's lab network: layers below `base` (in CephFS,
    mounted at `mount`), node01 (.11) and node02 (.12) in group `compute` (a layer)."""
    settings = Settings(
        server_address=server, subnet=ipaddress.IPv4Network(CEPH_SUBNET),
        nfs_server=NfsServerKind.GANESHA_CEPH, cephfs_mount=PurePosixPath(mount),
        ceph_conf=PurePosixPath(conf), state_dir=PurePosixPath(base / "systems"),
        group_dir=PurePosixPath(base / "groups"), interface="eth0")
    nodes = [make_node(i, address=f"10.96.0.{10 + i}", groups=("default", "compute"))
             for i in (1, 2)]
    return make_inventory(nodes=nodes, groups=[layer_group("compute")], settings=settings,
                          image_root=image)


def serve_ganesha_ceph(lab: Lab, netns: str, paths: Paths, inventory: Inventory
                       ) -> subprocess.Popen[bytes]:
    """`oneroot serve --no-dhcp --no-tftp --no-http` with `inventory` in a new home `paths`,
    in namespace `netns`: it applies the layers (in CephFS, through the server's mount),
    joins the grace database and supervises ganesha-ceph. Returns once ganesha serves."""
    init_cluster(paths, {"server_address": str(inventory.settings.server_address),
                         "subnet": str(inventory.settings.subnet)})
    store = open_store(paths)
    try:
        commit(store, inventory)
    finally:
        store.close()
    log = paths.home / "serve.log"
    with log.open("wb") as out:
        proc = lab.popen_in_ns([sys.executable, "-m", "oneroot", "--home", str(paths.home),
                                "serve", "--no-dhcp", "--no-tftp", "--no-http"],
                               netns=netns, what="oneroot serve", stdout=out,
                               stderr=subprocess.STDOUT)
    # Out of grace (no client to wait for) and listening: the supervisor says when.
    wait_log(ganesha_files(paths).log, b"NOT IN GRACE", proc, timeout=120, also=log)
    wait_log(log, b"nfs.ganesha.started", proc, timeout=60, also=log)
    return proc


def wait_log(path: Path, text: bytes, proc: subprocess.Popen[bytes], *, timeout: float,
             also: Path) -> None:
    """Until `text` is in `path`; AssertionError with both logs' tails if `proc` exits or
    `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_bytes():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    tails = "\n".join(p.read_text(errors="replace")[-2000:] if p.exists() else f"(no {p})"
                      for p in (also, path))
    raise AssertionError(f"no {text!r} within {timeout} s (exit {proc.poll()}):\n{tails}")


@contextlib.contextmanager
def ceph_in_lab() -> Iterator[CephCluster]:
    """A Ceph in a lab namespace of its own (`cluster.lab`, subnet `CEPH_SUBNET`, Ceph at its
    first address), so that boot servers and nodes added as the lab's clients reach it, and
    nothing binds on the host."""
    with (Lab.create(subnet=CEPH_SUBNET, state_dir=STATE_DIR,
                     router_advertisements=False) as lab,
          CephCluster.create(netns=lab.netns, address=str(lab.server_address)) as cluster):
        cluster.lab = lab
        yield cluster


@pytest.fixture(scope="session")
def ceph_cluster() -> Iterator[CephCluster]:
    """The test run's one Ceph: started once, never per test or per module (`ceph_in_lab`),
    stopped when the session ends."""
    Lab.cleanup_stale(STATE_DIR)
    with ceph_in_lab() as cluster:
        yield cluster


def main() -> None:
    parser = argparse.ArgumentParser(description="a throwaway single-host Ceph")
    parser.add_argument("--netns")
    parser.add_argument("--address", default="127.0.0.1")
    args = parser.parse_args()
    # SIGTERM (and SIGINT, which a shell's background job ignores) stop it cleanly.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with CephCluster.create(netns=args.netns, address=args.address) as cluster:
        print(f"ceph up in {cluster.timings.start_seconds} s: ceph -c {cluster.conf} status",
              flush=True)
        print(json.dumps({"steps": cluster.timings.steps, "rss_kib": cluster.rss_kib()}),
              flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
