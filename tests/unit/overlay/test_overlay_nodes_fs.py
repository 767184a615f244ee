"""`prepare_nodes` / `prepare_group_layers`: directories and identities from an inventory,
idempotent, network files chosen by what the image has."""

from __future__ import annotations

from pathlib import Path

from oneroot.model import Group
from oneroot.model.inventory import Inventory
from oneroot.model.paths import Paths
from oneroot.model.resolved import resolve_cluster
from oneroot.ops.nodes_fs import identity_dir, prepare_group_layers, prepare_nodes
from oneroot.testing.inventory import layer_group, make_inventory, make_node, settings_under


def _setup(tmp_path: Path) -> tuple[Inventory, Paths, Path]:
    image = tmp_path / "image"
    (image / "usr/lib/systemd").mkdir(parents=True)
    (image / "usr/lib/systemd/systemd-networkd").write_text("")
    (image / "sbin").mkdir()
    (image / "sbin/ifup").write_text("")
    inv = make_inventory(nodes=[make_node(1, groups=("default", "compute"))],
                         groups=[layer_group("compute"), Group(name="plain")],
                         settings=settings_under(tmp_path, domain="lab"), image_root=image)
    return inv, Paths(home=tmp_path / "home"), image


def test_prepare_nodes(tmp_path: Path) -> None:
    inv, paths, _ = _setup(tmp_path)
    # ed25519 only: RSA generation is slow and tested in test_overlay_identity.
    [first] = prepare_nodes(resolve_cluster(inv), paths, ssh_key_types=("ed25519",))
    upper = tmp_path / "systems/node01/upper"
    assert first.dirs_changed and (tmp_path / "systems/node01/work").is_dir()
    assert (upper / "etc/hostname").read_text() == "node01\n"
    assert (upper / "etc/systemd/network/10-oneroot-boot.network").is_file()
    assert (upper / "etc/network/interfaces").is_file()  # the image has ifupdown
    assert (identity_dir(paths, "node01") / "manifest.json").is_file()
    [again] = prepare_nodes(resolve_cluster(inv), paths, ssh_key_types=("ed25519",))
    assert not again.dirs_changed and again.written == ()


def test_group_layers_only_for_layer_groups(tmp_path: Path) -> None:
    inv, _, _ = _setup(tmp_path)
    prepared = prepare_group_layers(resolve_cluster(inv))
    assert [p.name for p in prepared] == ["compute"]
    assert (tmp_path / "groups/compute").is_dir()
    assert not (tmp_path / "groups/plain").exists()
