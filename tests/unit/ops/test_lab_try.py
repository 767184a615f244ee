"""`lab try`'s plan and export: the canary boots NODE's kernel, initramfs and command line on
the version asked for, NODE's layer read-only under a tmpfs, from an address of its own; NODE's
layer is exported read-only to that address only while the canary's `lab try` runs."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from oneroot.model import Group, Image, InitSystem, Settings, resolve_cluster
from oneroot.model.imageversion import ImageVersion
from oneroot.model.paths import Paths
from oneroot.ops.canary import (
    MAX_RECORD_BYTES,
    canary_dir,
    canary_name,
    canary_readers,
    read_canaries,
    record_canary,
)
from oneroot.ops.catalog import BootCatalog
from oneroot.ops.lab_try import canary_address, plan_try
from oneroot.render.cluster import render_exports, render_ganesha
from oneroot.testing.inventory import make_inventory, make_node

V1 = PurePosixPath("/srv/images/lab")
V2 = PurePosixPath("/srv/images/lab.versions/2")
CANARY = ipaddress.IPv4Address("10.0.0.254")


def _inventory(**node01: object) -> object:
    lab = Image(name="lab", root=V1, init_system=InitSystem.SYSTEMD, versions=(
        ImageVersion(number=1, root=V1, init_system="systemd"),
        ImageVersion(number=2, root=V2, parent=1, init_system="systemd")))
    nodes = [make_node(1, groups=("default", "gpu"), **node01),  # type: ignore[arg-type]
             make_node(2, ephemeral=True, image="lab")]
    return make_inventory(
        nodes=nodes, images=[lab], groups=[Group(name="gpu", values={
            "group_layer": True, "kernel_args": ("net.ifnames=0", "quiet"),
            "runlevel": "compute"})],
        settings=Settings(state_dir=PurePosixPath("/srv/state")),
        image_root="/srv/images/default")


def test_the_plan_is_the_nodes_boot_with_its_layer_read_only_under_a_tmpfs() -> None:
    inv = _inventory(image="lab@1", bmc_address="10.0.1.11")
    plan = plan_try(inv, "node01", image="lab@2", sets={"kernel_args": ("quiet", "x=1")})
    assert (plan.canary, plan.image, plan.address) == ("try-node01", "lab@2", CANARY)
    assert plan.groups == ("default", "gpu") and plan.runlevel == "compute"
    root = next(a for a in plan.cmdline.split() if a.startswith("root="))
    # image lab@2, the group's layer, then node01's own layer read-only, a tmpfs on top
    assert root == (f"root=10.0.0.1:{V2}:ro;10.0.0.1:/var/state/groups/gpu;ro;"
                    "10.0.0.1:/srv/state/node01;ro;tmpfs"), root
    assert "systemd.unit=compute.target" in plan.cmdline and "x=1" in plan.cmdline
    assert "ip=dhcp" in plan.cmdline and "oneroot.status=" in plan.cmdline
    # NODE's inventory is untouched: its own boot still names lab@1 and its rw layer
    real = BootCatalog(resolve_cluster(inv)).node_context("node01")
    assert str(V1) in real.root_spec and real.root_spec.endswith("/srv/state/node01;rw")
    assert plan.kernel.name == "vmlinuz" and plan.initramfs.name == "initramfs.img"


def test_an_ephemeral_node_keeps_one_tmpfs_and_the_channel_is_its_version() -> None:
    plan = plan_try(_inventory(), "node02")
    assert plan.image == "lab@2"  # `image=…` default resolves the latest
    root = next(a for a in plan.cmdline.split() if a.startswith("root="))
    assert root.endswith("10.0.0.1:/srv/state/node02;ro;tmpfs") and root.count("tmpfs") == 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"image": "lab@9"}, "no version 9"),
    ({"image": "nope@1"}, "nope"),
])
def test_bad_plans_are_refused(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(Exception) as info:
        plan_try(_inventory(), "node01", **kwargs)
    assert message in str(info.value) and getattr(info.value, "hint", None)


def test_a_union_server_node_is_tried_on_a_snapshot_of_its_upper() -> None:
    """Its upper is the server's union's: the canary unions the same layers in its own
    initramfs, with a snapshot of the upper (in the canary's own directory) in its place,
    read-only under a tmpfs; the canary's own entry is never a server-side union."""
    inv = _inventory(union="server")
    plan = plan_try(inv, "node01", image="lab@2")
    assert plan.snapshot_of == Path("/srv/state/node01/upper")
    assert plan.snapshot == Path("/srv/state/try-node01/snapshot")
    assert plan.exported_by == "try-node01" and plan.check_overrides["union"] == "client"
    root = next(a for a in plan.cmdline.split() if a.startswith("root="))
    assert root == (f"root=10.0.0.1:{V2}:ro;10.0.0.1:/var/state/groups/gpu;ro;"
                    "10.0.0.1:/srv/state/try-node01/snapshot;ro;tmpfs"), root
    assert "merged" not in plan.cmdline and "/srv/state/node01" not in root
    # NODE's own boot is still its server-side union
    real = BootCatalog(resolve_cluster(inv)).node_context("node01")
    assert real.root_spec == "10.0.0.1:/srv/state/node01/merged:rw", real.root_spec
    client = plan_try(_inventory(), "node01")
    assert client.snapshot is None and client.exported_by == "node01"
    assert "union" not in client.check_overrides


def test_a_live_server_side_union_is_never_exported_to_a_canary(tmp_path: Path) -> None:
    """A record naming a union=server node (a canary of it) adds no reader to its merged
    tree: the canary reads a snapshot through its own export instead."""
    paths = Paths(home=tmp_path)
    record_canary(paths, canary="try-node01", node="node01", address=CANARY)
    ctx = BootCatalog(resolve_cluster(_inventory(union="server"))).cluster_context(
        readers=canary_readers(paths))
    assert "10.0.0.254" not in render_exports(ctx) and "10.0.0.254" not in render_ganesha(ctx)


def test_the_canary_address_is_free_and_outside_the_pool() -> None:
    inv = _inventory()
    assert canary_address(inv) == CANARY
    nodes = {**inv.nodes, "x": make_node(9, name="x", address="10.0.0.254")}
    inv = inv.replace(nodes=nodes, settings=Settings(
        pool_start=ipaddress.IPv4Address("10.0.0.200"),
        pool_end=ipaddress.IPv4Address("10.0.0.253")))
    assert canary_address(inv) == ipaddress.IPv4Address("10.0.0.199")
    assert canary_name("n" * 63) == "try-" + "n" * 59


def test_the_canary_takes_no_gateway_dns_or_seen_address() -> None:
    """On a real segment the canary's host route would hide whoever holds its address from
    the server: not the gateway's, a DNS server's, nor any host the server has seen there."""
    ip = ipaddress.IPv4Address
    inv = _inventory()
    inv = inv.replace(settings=Settings(gateway=ip("10.0.0.254"), dns=(ip("10.0.0.253"),)))
    assert canary_address(inv) == ip("10.0.0.252")
    assert canary_address(inv, seen=[ip("10.0.0.252"), ip("10.0.0.250")]) == ip("10.0.0.251")


def test_nodes_layer_is_exported_read_only_to_a_running_canary_only(tmp_path: Path) -> None:
    """The export of node01's layer gains the canary's address read-only (knfsd and
    ganesha) while the record's process lives; a dead one's record exports nothing."""
    paths = Paths(home=tmp_path)
    record_canary(paths, canary="try-node01", node="node01", address=CANARY)
    readers = canary_readers(paths)
    assert readers == {"node01": (CANARY,)}
    ctx = BootCatalog(resolve_cluster(_inventory())).cluster_context(readers=readers)
    exports = render_exports(ctx)
    line = next(ln for ln in exports.splitlines() if ln.startswith("/srv/state/node01 "))
    assert "10.0.0.11(rw," in line and "10.0.0.254(ro," in line
    assert "10.0.0.254" not in exports.replace(line, "")  # nothing else is given to it
    conf = render_ganesha(ctx)
    block = conf[conf.index("# diff-overlay of node node01"):]
    block = block[:block.index("\n}\n")]
    assert "Clients = 10.0.0.11;\n        Access_Type = RW;" in block
    assert "Clients = 10.0.0.254;\n        Access_Type = RO;" in block
    # a record left by a killed `lab try`: its process is gone, it exports nothing
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    doc = json.loads((canary_dir(paths) / "try-node01.json").read_text())
    doc["pid"] = int(dead.stdout)
    (canary_dir(paths) / "try-node01.json").write_text(json.dumps(doc))
    assert [r.alive for r in read_canaries(paths)] == [False]
    assert canary_readers(paths) == {}


def test_a_symlinked_or_oversized_record_is_not_a_canary(tmp_path: Path) -> None:
    paths = Paths(home=tmp_path)
    record_canary(paths, canary="try-node01", node="node01", address=CANARY)
    real = canary_dir(paths) / "try-node01.json"
    os.replace(real, tmp_path / "elsewhere.json")
    real.symlink_to(tmp_path / "elsewhere.json")
    assert read_canaries(paths) == []
    real.unlink()
    doc = json.loads((tmp_path / "elsewhere.json").read_text())
    doc["pad"] = "x" * MAX_RECORD_BYTES
    real.write_text(json.dumps(doc))
    assert read_canaries(paths) == []


def test_versions_are_exported_to_the_nodes_that_boot_or_run_them_only() -> None:
    """lab@N (N ≥ 2) is exported to the nodes that boot it next or still run it (a canary is
    one: it is pinned to the version it tries), not to the subnet; version 1 keeps the
    subnet (the export files of clusters made before versions do not change)."""
    lab3 = ImageVersion(number=3, root=PurePosixPath("/srv/images/lab.versions/3"), parent=2,
                        init_system="systemd")
    inv = _inventory(image="lab@2")
    lab = inv.images["lab"]
    inv = inv.replace(images={**inv.images, "lab": Image(
        name="lab", root=V1, init_system=InitSystem.SYSTEMD, versions=(*lab.versions, lab3))},
        nodes={**inv.nodes, "node02": make_node(2, image="lab@1"),
               "node03": make_node(3, image="lab@1"),
               "try-node01": make_node(9, name="try-node01", address=CANARY,
                                       image="lab@3")})
    catalog = BootCatalog(resolve_cluster(inv))
    ctx = catalog.cluster_context(running=["lab@2"], running_nodes={"node03": "lab@2"})
    clients = {e.name: e.clients for e in ctx.images}
    assert clients["lab@2"] == (ipaddress.IPv4Address("10.0.0.11"),
                                ipaddress.IPv4Address("10.0.0.13"))
    assert clients["lab@3"] == (CANARY,) and clients["lab"] == ()
    exports = render_exports(ctx)
    line = next(ln for ln in exports.splitlines() if ln.startswith("/srv/images/lab.versions/2"))
    assert "10.0.0.11(ro," in line and "10.0.0.13(ro," in line and "10.0.0.0/24" not in line
    assert "10.0.0.12" not in line
    line = next(ln for ln in exports.splitlines() if ln.startswith(f"{V1} "))
    assert "10.0.0.0/24(ro," in line
    conf = render_ganesha(ctx)
    block = conf[conf.index("# image lab@3"):]
    assert "Clients = 10.0.0.254;" in block[:block.index("\n}\n")]
    # a version named running by nobody known (a list of names only): the subnet, as before
    ctx = catalog.cluster_context(running=["lab@3"])
    assert {e.name: e.clients for e in ctx.images}["lab@3"] == ()
