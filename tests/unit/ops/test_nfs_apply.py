"""`nfs apply` takes one resolved cluster down to the exports file and resolves nothing again."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from oneroot.model import NfsServerKind, Profile, ProfileValue, resolve_cluster
from oneroot.model.paths import Paths
from oneroot.ops.nfs_serving import apply_nfs
from oneroot.testing.inventory import layer_group, make_inventory, make_node, settings_under


def test_nfs_apply_resolves_nothing_again(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    image = tmp_path / "image"
    (image / "etc").mkdir(parents=True)
    inv = make_inventory(
        nodes=[make_node(1, groups=("default", "compute")), make_node(2)],
        groups=[layer_group("compute")], image_root=image,
        settings=settings_under(tmp_path, nfs_server=NfsServerKind.KNFSD))
    cluster = resolve_cluster(inv)

    # Every resolution of a node builds its Profile here: count them from now on.
    resolutions: list[str] = []
    build = Profile.from_values.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Profile], values: Mapping[str, ProfileValue]) -> Profile:
        resolutions.append(str(values.get("image", "")))
        return build(cls, values)  # type: ignore[no-any-return]

    monkeypatch.setattr(Profile, "from_values", classmethod(counting))
    exports = tmp_path / "exports"
    result = apply_nfs(cluster, Paths(home=tmp_path / "home"), exportfs="true",
                       exports_file=exports)
    assert resolutions == []
    assert exports.read_text() == result.plan.text
    text = exports.read_text()
    assert f"{tmp_path}/systems/node01 " in text and f"{tmp_path}/groups/compute " in text
    assert (tmp_path / "systems/node02/upper/etc/hostname").read_text() == "node02\n"
