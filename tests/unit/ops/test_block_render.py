"""union=block in what the server renders: the node's root= names its image version's EROFS
file and its own ext4 file, the parsers (Python and the initramfs' sh) agree on it, and the
EROFS directory is exported read-only only when a block node exists."""

from __future__ import annotations

import subprocess
from importlib import resources
from pathlib import PurePosixPath

from oneroot.model import NfsServerKind, Settings, resolve_cluster
from oneroot.model.inventory import Inventory
from oneroot.model.paths import Paths
from oneroot.ops.boot import node_root_spec, root_spec_text
from oneroot.ops.nfs_serving import nfs_plan
from oneroot.rootspec import parse
from oneroot.testing.ganesha import exports as ganesha_exports
from oneroot.testing.inventory import make_inventory, make_node

BLOCKS = "/var/lib/oneroot/blocks"


def _inv(node01: dict[str, str] | None = None, *, block: bool = True) -> Inventory:
    values = {"union": "block", **(node01 or {})} if block else {}
    return make_inventory(nodes=[make_node(1, **values), make_node(2)],
                          settings=Settings(nfs_server=NfsServerKind.GANESHA),
                          image_root="/srv/images/bookworm")


def test_root_names_the_erofs_file_and_the_nodes_ext4_top() -> None:
    cluster = resolve_cluster(_inv())
    text = root_spec_text(cluster, cluster.node("node01"))
    assert text == (f"10.0.0.1:{BLOCKS}/default@1.erofs:ro,loop=erofs;"
                    "10.0.0.1:/var/state/systems/node01/top.ext4;rw,loop=ext4")
    spec = node_root_spec(cluster, cluster.node("node01"))
    assert [layer.loop for layer in spec.layers] == ["erofs", "ext4"]  # type: ignore[union-attr]
    assert parse(text) == spec
    script = resources.files("oneroot.initramfs") / "modules/40-rootspec/parse-root.sh"
    done = subprocess.run(["busybox", "sh", str(script), "--format", text], capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == text
    eph = resolve_cluster(_inv({"ephemeral": "true"}))
    assert root_spec_text(eph, eph.node("node01")) == (
        f"10.0.0.1:{BLOCKS}/default@1.erofs:ro,loop=erofs;tmpfs")
    assert root_spec_text(cluster, cluster.node("node02")).endswith(
        ";10.0.0.1:/var/state/systems/node02;rw")  # client mode: the seed's line


def test_the_block_dir_is_exported_read_only_only_with_block_nodes() -> None:
    plan = nfs_plan(resolve_cluster(_inv()), Paths())
    exports = ganesha_exports(plan.text)
    assert exports[BLOCKS] == (BLOCKS, "10.0.0.0/24")
    assert 'Path = "' + BLOCKS + '"' in plan.text
    block = plan.text.split(f'Path = "{BLOCKS}"')[1].split("\n}\n")[0]
    assert "Access_Type = RO" in block
    # the node's own directory (which holds top.ext4) stays its alone
    assert exports["/var/state/systems/node01"] == ("/var/state/systems/node01", "10.0.0.11")
    plain = nfs_plan(resolve_cluster(_inv(block=False)), Paths())
    assert BLOCKS not in ganesha_exports(plain.text)
    assert PurePosixPath(BLOCKS) == Settings().block_dir
