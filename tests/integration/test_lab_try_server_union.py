"""`lab try` of a `union=server` node (issue 14), with `oneroot serve` and the nfs-ganesha it
supervises in a lab namespace (its own mount namespace: the node layers are filesystems of
their own mounted there, `layer_fs=own`), real overlayfs, and libnfs clients in namespaces of
their own: node01 (its address and MAC) and the canary (its own address and MAC).

node01 runs: its union is mounted and exported to it, it writes a file and deletes one through
NFS. The canary's part of `lab try` that touches files and exports (`plan_try`, `canary_entry`,
`wait_export`, `canary_snapshot`; the VM boot is the union=client canary's, e2e-tested) gives
the canary a snapshot of node01's upper, read-only, to the canary's address only: the canary
reads node01's write and whiteout there, cannot write it, and cannot read node01's live
merged tree; node01 cannot read the snapshot, and writes on in its union meanwhile (the
snapshot does not change). Afterwards the snapshot and its export are gone and node01's
union is as it was. Needs root."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from oneroot.lab import Lab
from oneroot.lab.netns import Client
from oneroot.model import NfsServerKind
from oneroot.model.paths import Paths
from oneroot.ops import inventory as inv_ops
from oneroot.ops.lab_try import (
    canary_entry,
    canary_snapshot,
    plan_try,
    server_view,
    wait_export,
)
from oneroot.overlay.snapshot import snapshot_tree
from oneroot.testing import nfsclient
from oneroot.testing.nfsclient import NfsClient

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts)"),
    pytest.mark.skipif(shutil.which("ganesha.nfsd") is None or not nfsclient.available(libnfs=True),
                       reason="needs nfs-ganesha and libnfs-utils"),
]

ONEROOT = [sys.executable, "-m", "oneroot"]
SUBNET = ipaddress.IPv4Network("10.97.0.0/24")
SERVER = ipaddress.IPv4Address("10.97.0.1")
NODE01 = ipaddress.IPv4Address("10.97.0.11")
CANARY = ipaddress.IPv4Address("10.97.0.254")
MAC01 = "52:54:00:97:00:01"


@dataclass
class Served:
    lab: Lab
    home: Path
    state: Path
    log: Path

    def oneroot(self, *args: str) -> None:
        subprocess.run([*ONEROOT, "--home", str(self.home), *args], check=True,
                       capture_output=True, text=True, timeout=120)

    def client(self, address: ipaddress.IPv4Address, mac: str) -> NfsClient:
        c: Client = self.lab.add_client(f"{address}/24")
        for args in (["down"], ["address", mac], ["up"]):
            self.lab.run_in_ns(["ip", "link", "set", "eth0", *args], netns=c.netns)
        return NfsClient(2049, host=str(SERVER), netns=c.netns)


def _until(ok: Callable[[], bool], what: str, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"no {what}:\n{log.read_text()[-3000:]}"
        time.sleep(0.3)


def _refused(client: NfsClient, tool: str, *args: str) -> bool:
    """`tool` fails, answered or not (a dropped request is given up after 10 s)."""
    return client.run("timeout", "10", tool, *args).returncode != 0


def _read(client: NfsClient, path: str, log: Path) -> str:
    """The text of `path` once it can be read (the first read after an export reload, or
    before the node pin knows a new MAC, may fail)."""
    found: list[str] = []

    def got() -> bool:
        done = client.cat(path)
        found[:] = [done.stdout] if done.returncode == 0 else []
        return bool(found)

    _until(got, f"a read of {path}", log)
    return found[0]


@pytest.fixture
def served() -> Iterator[Served]:
    tmp = Path("/var/tmp") / f"oneroot-tsu-{os.getpid()}"  # overlayfs wants xattrs
    (tmp / "image" / "etc").mkdir(parents=True)
    (tmp / "image" / "etc" / "motd").write_text("image motd\n")
    (tmp / "image" / "etc" / "issue.net").write_text("image issue.net\n")
    home, state = tmp / "home", tmp / "systems"
    s = Served(lab=Lab.create(subnet=str(SUBNET), router_advertisements=False,
                              workdir=tmp / "lab"), home=home, state=state, log=tmp / "serve.log")
    try:
        s.oneroot("init", "--server", str(SERVER), "--subnet", str(SUBNET), "--interface",
                  "br0", "--image-root", str(tmp / "image"), "--state-dir", str(state),
                  "--boot-dir", str(tmp / "boot"), "--nfs-server", "ganesha", "--http-port",
                  "8080")
        s.oneroot("node", "add", "node01", "--mac", MAC01, "--ip", str(NODE01), "--set",
                  "union=server")
        with s.log.open("wb") as out:
            s.lab.popen_in_ns([*ONEROOT, "--home", str(home), "serve", "--no-dhcp"],
                              what="oneroot serve", stdout=out, stderr=subprocess.STDOUT)
        _until(lambda: bool(s.lab.run_in_ns(["ss", "-ltnH", "sport = :2049"]).stdout.strip()),
               "ganesha on 2049", s.log)
        yield s
    finally:
        s.lab.teardown()  # serve and ganesha go with it, and their mount namespace
        print(s.log.read_text(errors="replace")[-3000:])
        shutil.rmtree(tmp, ignore_errors=True)


def test_the_canary_reads_a_snapshot_of_the_live_upper_and_nothing_else(served: Served
                                                                         ) -> None:
    s, log = served, served.log
    merged, snapshot = f"{s.state}/node01/merged", f"{s.state}/try-node01/snapshot"
    node01 = s.client(NODE01, MAC01)
    # node01 runs: a write and a deletion through its union land in its upper
    assert _read(node01, f"{merged}/etc/motd", log) == "image motd\n"
    payload = s.home.parent / "payload"
    payload.write_text("written by node01\n")
    assert node01.copy_in(payload, f"{merged}/root-file").returncode == 0
    # (libnfs's REMOVE runs in this process: in node01's namespace, by a process there)
    s.lab.run_in_ns([sys.executable, "-c", "import sys\n"
                     "from oneroot.testing.nfsclient import NfsClient\n"
                     "NfsClient(2049, host=sys.argv[1]).remove(sys.argv[2])",
                     str(SERVER), f"{merged}/etc/issue.net"], netns=node01.netns)

    paths = Paths(home=s.home)
    store = inv_ops.open_store(paths)
    try:
        plan = plan_try(store.load(), "node01", address=CANARY)
        assert plan.snapshot is not None and str(plan.snapshot) == snapshot
        kind = NfsServerKind.GANESHA
        view = server_view(paths, kind)
        assert view != Path("/")  # serve's layers are mounted in its own namespace only
        with canary_entry(store, paths, plan):
            wait_export(paths, kind, plan)
            canary = s.client(CANARY, str(plan.mac))
            with canary_snapshot(plan, limit=1 << 30, progress=print, view=view):
                # node01's upper, as it was: its write, its whiteout over the image's file
                assert _read(canary, f"{snapshot}/upper/root-file", log) == \
                    "written by node01\n"
                assert "issue.net" in canary.names(f"{snapshot}/upper/etc")
                assert canary.read(f"{snapshot}/upper/etc/hostname") == "node01\n"
                # read-only, and never node01's live union
                assert _refused(canary, "nfs-cp", str(payload),
                                canary.url(f"{snapshot}/upper/canary-wrote"))
                assert _refused(canary, "nfs-cat", canary.url(f"{merged}/root-file"))
                assert _refused(canary, "nfs-ls", canary.url(f"{s.state}/node01/upper"))
                # node01 cannot read the snapshot; it writes on in its running union, and
                # the snapshot does not change
                assert _refused(node01, "nfs-cat", node01.url(f"{snapshot}/upper/root-file"))
                payload.write_text("written during the try\n")
                assert node01.copy_in(payload, f"{merged}/later").returncode == 0
                assert "later" not in canary.names(f"{snapshot}/upper")
            assert not os.path.lexists(view / snapshot.lstrip("/"))
            # a try killed with its snapshot taken: the canary's removal (as the next try's
            # clean-up does it) removes that snapshot too, where the NFS server sees it
            snapshot_tree(view / f"{s.state}/node01/upper".lstrip("/"),
                          view / snapshot.lstrip("/"))
        assert not os.path.lexists(view / snapshot.lstrip("/"))
    finally:
        store.close()
    # After: the canary's entry and export are gone; node01 reads on in the same union
    assert _refused(canary, "nfs-cat", canary.url(f"{snapshot}/upper/root-file"))
    assert node01.read(f"{merged}/later") == "written during the try\n"
    assert node01.read(f"{merged}/root-file") == "written by node01\n"
    assert "issue.net" not in node01.names(f"{merged}/etc")
