"""Runlevels from the inventory: systemd targets / OpenRC runlevel dirs, into the image, or into
node layers when the image is the server's live `/`."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from oneroot.model.cluster import InitSystem, Runlevel, Settings
from oneroot.model.inventory import Inventory
from oneroot.model.resolved import resolve_cluster
from oneroot.ops.runlevels import (
    GENERATED,
    apply_runlevels,
    destinations,
    render_target,
    unit_name,
)
from oneroot.testing.inventory import make_inventory

COMPUTE = Runlevel(name="computenode", services=("slurmd", "munge.service"),
                   description="compute")


def inventory(tmp_path: Path, *, image_root: Path | str, init: InitSystem = InitSystem.SYSTEMD,
              runlevels: tuple[Runlevel, ...] = (COMPUTE,)) -> Inventory:
    inv = make_inventory(settings=Settings(state_dir=PurePosixPath(tmp_path / "state")),
                         image_root=image_root, init_system=init, runlevels=runlevels)
    for name in inv.nodes:
        (tmp_path / "state" / name / "upper").mkdir(parents=True, exist_ok=True)
        (tmp_path / "state" / name / "work").mkdir(parents=True, exist_ok=True)
    return inv


def test_target_text() -> None:
    text = render_target(COMPUTE)
    assert text.startswith(GENERATED + "\n[Unit]\n")
    assert "Requires=basic.target\n" in text
    assert "Wants=slurmd.service munge.service\n" in text
    assert "AllowIsolate=yes\n" in text
    assert "Description=compute\n" in text
    assert unit_name("foo.socket") == "foo.socket" and unit_name("foo") == "foo.service"


def test_image_gets_the_target_once_and_stale_ones_go(tmp_path: Path) -> None:
    image = tmp_path / "image"
    (image / "etc/systemd/system").mkdir(parents=True)
    inv = inventory(tmp_path, image_root=image)
    first = apply_runlevels(resolve_cluster(inv))
    target = image / "etc/systemd/system/computenode.target"
    assert first.written == [target]
    assert "Wants=slurmd.service" in target.read_text()
    assert not apply_runlevels(resolve_cluster(inv)).changed  # idempotent
    assert not (tmp_path / "state/node01/upper/etc").exists()  # the image is not the live /
    hand = image / "etc/systemd/system/mine.target"
    hand.write_text("[Unit]\n")
    gone = apply_runlevels(resolve_cluster(inventory(tmp_path, image_root=image, runlevels=())))
    assert gone.removed == [target] and not target.exists()
    assert hand.exists()  # not ours: never touched


def test_hand_made_target_of_the_same_name_wins(tmp_path: Path) -> None:
    image = tmp_path / "image"
    (image / "etc/systemd/system").mkdir(parents=True)
    (image / "etc/systemd/system/computenode.target").write_text("[Unit]\n# mine\n")
    result = apply_runlevels(resolve_cluster(inventory(tmp_path, image_root=image)))
    assert result.written == [] and len(result.skipped) == 1
    assert "# mine" in (image / "etc/systemd/system/computenode.target").read_text()


def test_live_root_goes_into_node_layers(tmp_path: Path) -> None:
    inv = inventory(tmp_path, image_root="/")
    dests = list(destinations(resolve_cluster(inv)))
    assert [d.base for d in dests] == [tmp_path / "state/node01/upper",
                                       tmp_path / "state/node02/upper"]
    result = apply_runlevels(resolve_cluster(inv))
    for node in ("node01", "node02"):
        target = tmp_path / f"state/{node}/upper/etc/systemd/system/computenode.target"
        assert target in result.written and target.read_text() == render_target(COMPUTE)


def test_openrc_runlevel_dir(tmp_path: Path) -> None:
    image = tmp_path / "image"
    (image / "etc/runlevels/default").mkdir(parents=True)
    inv = inventory(tmp_path, image_root=image, init=InitSystem.OPENRC)
    apply_runlevels(resolve_cluster(inv))
    level = image / "etc/runlevels/computenode"
    assert sorted(p.name for p in level.iterdir()) == [".oneroot-generated", "munge.service",
                                                       "slurmd"]
    assert (level / "slurmd").readlink() == Path("/etc/init.d/slurmd")
    fewer = Runlevel(name="computenode", services=("slurmd",))
    apply_runlevels(resolve_cluster(inventory(tmp_path, image_root=image, init=InitSystem.OPENRC,
                              runlevels=(fewer,))))
    assert sorted(p.name for p in level.iterdir()) == [".oneroot-generated", "slurmd"]
    apply_runlevels(resolve_cluster(inventory(tmp_path, image_root=image,
                                              init=InitSystem.OPENRC, runlevels=())))
    assert not level.exists() and (image / "etc/runlevels/default").is_dir()


def test_unknown_init_gets_both(tmp_path: Path) -> None:
    image = tmp_path / "image"
    image.mkdir()
    apply_runlevels(resolve_cluster(inventory(tmp_path, image_root=image, init=InitSystem.UNKNOWN)))
    assert (image / "etc/systemd/system/computenode.target").is_file()
    assert (image / "etc/runlevels/computenode/slurmd").is_symlink()
