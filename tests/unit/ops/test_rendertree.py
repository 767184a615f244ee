"""`oneroot render`: atomic files, only changed files rewritten, removed nodes' files removed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from oneroot.errors import ConfigError
from oneroot.model.cluster import InitSystem, Runlevel
from oneroot.model.inventory import Inventory
from oneroot.model.resolved import resolve_cluster
from oneroot.ops.catalog import BootCatalog, assign_export_ids
from oneroot.ops.rendertree import RenderReport, render_tree
from oneroot.testing.inventory import make_inventory

VIEWS = {"default": Path("/var/lib/oneroot/views/default")}


def render(catalog: BootCatalog, boot: Path, cfg: Path,
           views: dict[str, Path] | None = None) -> RenderReport:
    return render_tree(catalog, boot, cfg, views=views)


def inventory(count: int = 3) -> Inventory:
    return make_inventory(nodes=count, init_system=InitSystem.SYSTEMD,
                          runlevels=[Runlevel(name="computenode")])


def test_seed_line_and_exports(tmp_path: Path) -> None:
    catalog = BootCatalog(resolve_cluster(inventory(1)))
    report = render(catalog, tmp_path / "boot", tmp_path / "cfg",
                VIEWS)
    assert len(report.written) == 7
    pxe = (tmp_path / "boot/pxelinux.cfg/01-52-54-00-00-00-01").read_text()
    assert "root=10.0.0.1:/:ro;10.0.0.1:/var/state/systems/node01;rw " in pxe
    exports = (tmp_path / "cfg/exports").read_text()
    # the seed's `/` goes out as its masked view, squashed, only while mounted
    assert "\n/var/lib/oneroot/views/default 10.0.0.0/24(ro,sync,no_root_squash," in exports
    assert "\n/ " not in exports and "apply with `exportfs -ra`" not in exports
    ganesha = (tmp_path / "cfg/ganesha.conf").read_text()
    assert 'Path = "/var/lib/oneroot/views/default";\n    Pseudo = "/";' in ganesha
    assert 'Path = "/";' not in ganesha
    assert "\n/var/state/systems/node01 10.0.0.11(rw,sync,no_root_squash,no_subtree_check" \
        in exports


def test_only_changed_files_are_rendered_and_written(tmp_path: Path) -> None:
    inv = inventory(3)
    render(BootCatalog(resolve_cluster(inv)), tmp_path / "boot", tmp_path / "cfg",
                VIEWS)
    again = render(BootCatalog(resolve_cluster(inv)), tmp_path / "boot", tmp_path / "cfg",
                VIEWS)
    assert (again.rendered, again.written) == (0, [])
    changed = inv.with_nodes([dataclasses.replace(inv.nodes["node02"],
                                                  overrides={"runlevel": "computenode"})])
    report = render(BootCatalog(resolve_cluster(changed)), tmp_path / "boot", tmp_path / "cfg",
                VIEWS)
    assert report.rendered == 3
    assert all("node02" in p or "00-00-02" in p for p in report.written)
    assert "systemd.unit=computenode.target" in (tmp_path / "boot/node02.ipxe").read_text()


def test_hand_edited_file_is_restored(tmp_path: Path) -> None:
    inv = inventory(1)
    render(BootCatalog(resolve_cluster(inv)), tmp_path / "boot", tmp_path / "cfg",
                VIEWS)
    target = tmp_path / "boot/node01.ipxe"
    original = target.read_text()
    target.write_text("#!ipxe\nshell\n")
    report = render(BootCatalog(resolve_cluster(inv)), tmp_path / "boot", tmp_path / "cfg",
                VIEWS)
    assert str(target) in report.written
    assert target.read_text() == original


def test_files_of_a_removed_node_go(tmp_path: Path) -> None:
    inv = inventory(2)
    render(BootCatalog(resolve_cluster(inv)), tmp_path / "boot", tmp_path / "cfg",
                VIEWS)
    smaller = inv.replace(nodes={"node01": inv.nodes["node01"]})
    report = render(BootCatalog(resolve_cluster(smaller)), tmp_path / "boot", tmp_path / "cfg",
                VIEWS)
    assert not (tmp_path / "boot/node02.ipxe").exists()
    assert len(report.removed) == 3
    assert not list((tmp_path / "boot").rglob(".*.tmp"))


def test_export_ids_are_kept_for_life() -> None:
    first = assign_export_ids(["node:a", "node:b"], {})
    second = assign_export_ids(["node:a", "node:b", "node:c"], first)
    assert {k: second[k] for k in first} == first
    assert len(set(second.values())) == 3
    many = assign_export_ids([f"node:n{i}" for i in range(5000)], {})
    assert len(set(many.values())) == 5000
    # A removed node's id is not reused while it is remembered.
    third = assign_export_ids(["node:a", "node:c"], {**second, "node:b": second["node:b"]})
    assert second["node:b"] not in third.values()


def test_render_refuses_to_write_an_unmasked_live_root(tmp_path: Path) -> None:
    """Without the image's view, `/` would be written into exports: nothing is written."""
    with pytest.raises(ConfigError, match="live root"):
        render(BootCatalog(resolve_cluster(inventory(1))), tmp_path / "boot", tmp_path / "cfg",
               {})
    assert not (tmp_path / "cfg" / "exports").exists()
    assert not (tmp_path / "cfg" / "ganesha.conf").exists()
