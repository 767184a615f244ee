"""The security view (DESIGN §6), proved with the real nfs-ganesha on 127.0.0.1 and the
userspace NFSv4.0 client (libnfs-utils' `nfs-ls`, `nfs-cat`, `nfs-cp`).

The image is the server's live `/`, exported as the masked overlayfs view at Pseudo `/`; the
client at 127.0.0.1 is node01. It must read /etc/passwd, get NOENT for /etc/shadow (and its
backup), not see the state dir's other nodes or oneroot's home, have writes refused, read its
own layer at its real path, and get a new export after a SIGHUP reload. Needs root.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from oneroot.model import NfsServerKind
from oneroot.model.inventory import Inventory
from oneroot.model.paths import Paths
from oneroot.model.resolved import resolve_cluster
from oneroot.nfs import ReloadAction, unmount_view
from oneroot.ops.nfs_serving import apply_nfs, ganesha_server, nfs_plan
from oneroot.testing import nfsclient
from oneroot.testing.inventory import layer_group, loopback_settings, make_inventory, make_node
from oneroot.testing.nfsclient import NfsClient
from oneroot.testing.ports import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts)"),
    pytest.mark.skipif(shutil.which("ganesha.nfsd") is None or not nfsclient.available(),
                       reason="needs nfs-ganesha, nfs-ganesha-vfs and libnfs-utils"),
]

LOCAL = ipaddress.IPv4Address("127.0.0.1")


def _inventory(base: Path, *, node01_groups: tuple[str, ...] = ("default",)) -> Inventory:
    # node01 is the test's client (127.0.0.1); node02 is somebody else.
    return make_inventory(
        nodes=[make_node(1, address=LOCAL, groups=node01_groups),
               make_node(2, address="127.0.0.2")],
        groups=[layer_group("compute")],
        settings=loopback_settings(base, nfs_server=NfsServerKind.GANESHA))


@pytest.fixture
def base() -> Iterator[Path]:
    # Under / itself (not a tmpfs), so files created during the test show through the view.
    path = Path("/var/tmp") / f"oneroot-it-{os.getpid()}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_masked_view_of_the_server_root(base: Path) -> None:
    paths = Paths(home=base / "home")
    inv = _inventory(base)
    port = free_port()
    client = NfsClient(port)
    cluster = resolve_cluster(inv)
    plan = nfs_plan(cluster, paths, port=port)
    try:
        apply_nfs(cluster, paths, plan=plan)  # ViewUnsupported here is a failure, not a skip
        server = ganesha_server(cluster, paths, port=port)

        async def scenario() -> None:
            async with server:
                await asyncio.to_thread(_prove, client, base, paths)
                # Inventory change: node01 joins a group layer; disk first, then a SIGHUP.
                inv2 = _inventory(base, node01_groups=("default", "compute"))
                plan2 = nfs_plan(resolve_cluster(inv2), paths, port=port)
                apply_nfs(resolve_cluster(inv2), paths, plan=plan2)
                (base / "groups" / "compute" / "g.txt").write_text("group\n")
                assert await server.reload(plan2.text) is ReloadAction.RELOADED
                proc = await asyncio.to_thread(client.cat, f"{base}/groups/compute/g.txt")
                assert proc.stdout == "group\n", proc.stderr

        asyncio.run(scenario())
    finally:
        for spec in plan.views.values():
            with contextlib.suppress(Exception):
                unmount_view(spec)


def _prove(client: NfsClient, base: Path, paths: Paths) -> None:
    # The image root at Pseudo "/": the seed's `server:/`.
    assert "etc" in client.names("/")
    passwd = client.cat("/etc/passwd")
    assert passwd.returncode == 0 and passwd.stdout.startswith("root:"), passwd.stderr
    for secret in ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-",
                   "/etc/ssh/ssh_host_ed25519_key", "/var/backups/shadow.bak"):
        proc = client.cat(secret)
        assert proc.returncode != 0 and "NOENT" in proc.stderr, (secret, proc)
    assert "shadow" not in client.names("/etc")
    assert client.lists_nothing("/root")

    # The state dir shows only the junctions this client may cross: its own.
    assert client.names(f"{base}/systems") == ["node01"]
    assert client.lists_nothing(paths.home)  # identity store (nodes' private keys) hidden
    other = client.cat(f"{base}/systems/node02/upper/etc/ssh/ssh_host_ed25519_key")
    assert other.returncode != 0, "node02's private key must not be readable by node01"
    assert (base / "systems/node02/upper/etc/ssh/ssh_host_ed25519_key").is_file()

    # node01's own layer at its real path: the seed's server:/var/state/systems/node01.
    assert sorted(client.names(f"{base}/systems/node01")) == ["upper", "work"]
    assert client.cat(f"{base}/systems/node01/upper/etc/hostname").stdout == "node01\n"

    # Writes to the view are refused; writes to its own layer work.
    local = base / "payload"
    local.write_text("x\n")
    refused = client.copy_in(local, "/var/tmp/oneroot-written")
    assert refused.returncode != 0 and "ROFS" in refused.stderr, refused
    assert not Path("/var/tmp/oneroot-written").exists()
    ok = client.copy_in(local, f"{base}/systems/node01/upper/new.txt")
    assert ok.returncode == 0, ok.stderr
    assert (base / "systems/node01/upper/new.txt").read_text() == "x\n"

    # The view is live: a file created in a system directory shows through at once
    # (base is under /var/tmp, which the view empties: nodes never see it).
    live = Path("/var/lib") / base.name
    live.mkdir()
    try:
        (live / "live.txt").write_text("live\n")
        assert client.read(f"{live}/live.txt") == "live\n"
    finally:
        shutil.rmtree(live)
    (base / "elsewhere.txt").write_text("x\n")
    assert client.cat(f"{base}/elsewhere.txt").returncode != 0
