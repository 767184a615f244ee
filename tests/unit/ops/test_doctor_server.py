"""`oneroot doctor` on a real server: interface and address (real `ip`), the state filesystem
rule, knfsd's state (a stand-in `exportfs`: this kernel has no nfsd), and no rebuild advice for
the server's own `/`."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path, PurePosixPath

from oneroot.model.cluster import Image, LayerFs, NfsServerKind, Settings
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster, resolve_cluster
from oneroot.nfs.view import MountEntry
from oneroot.ops import doctor
from oneroot.ops.doctor import Host, Level
from oneroot.ops.doctor_server import (
    check_export_subtrees,
    check_ganesha_filesystems,
    check_interface,
    check_knfsd,
    check_state_fs,
    exportfs_pairs,
)
from oneroot.ops.nfs_serving import nfs_plan
from oneroot.testing.inventory import layer_group, make_inventory, make_node


def test_a_missing_interface_is_an_error() -> None:
    [found] = check_interface(Settings(interface="eth9"))
    assert found.level is Level.ERROR and "eth9 does not exist" in found.message


def test_the_server_address_must_be_on_the_interface() -> None:
    [found] = check_interface(Settings(interface="lo"))  # 10.0.0.1 is not on lo
    assert found.level is Level.ERROR and "not the server address 10.0.0.1" in found.message
    [good] = check_interface(Settings(interface="lo",
                                      server_address=ipaddress.IPv4Address("127.0.0.1")))
    assert good.level is Level.OK


def test_a_state_dir_on_the_root_filesystem_is_refused(tmp_path: Path) -> None:
    state = Path("/var/tmp") / f"oneroot-doctor-{os.getpid()}"
    settings = Settings(state_dir=PurePosixPath(state / "systems"),
                        group_dir=PurePosixPath(state / "groups"))
    found = list(check_state_fs(settings))
    assert found[0].level is Level.ERROR and "holds more than layers" in found[0].message
    assert "--state-device" in found[0].fix


def test_exportfs_output_is_parsed() -> None:
    text = ("/var/lib/oneroot/views/default\n"
            "\t\t10.0.0.0/24(sync,wdelay,hide,crossmnt,no_subtree_check,fsid=1,mountpoint,"
            "sec=sys,ro,secure,all_squash)\n"
            "/var/state/systems/node01\n\t\t10.0.0.11(sync,wdelay,rw)\n"
            "/short   10.0.0.12(ro)\n")
    assert exportfs_pairs(text) == {("/var/lib/oneroot/views/default", "10.0.0.0/24"),
                                    ("/var/state/systems/node01", "10.0.0.11"),
                                    ("/short", "10.0.0.12")}


def _fake_nfsd(tmp_path: Path, threads: str, exportfs_output: str) -> tuple[Host, str]:
    proc = tmp_path / "proc"
    (proc / "fs/nfsd").mkdir(parents=True)
    (proc / "fs/nfsd/threads").write_text(threads)
    exportfs = tmp_path / "exportfs"
    exportfs.write_text("#!/bin/sh\ncat <<'EOF'\n" + exportfs_output + "EOF\n")
    exportfs.chmod(0o755)
    return Host(proc=proc, dev=tmp_path, root=Path("/")), str(exportfs)


def test_knfsd_not_loaded_or_idle(tmp_path: Path) -> None:
    [found] = check_knfsd(Host(proc=tmp_path, dev=tmp_path))
    assert found.level is Level.ERROR and "not loaded" in found.message
    host, exportfs = _fake_nfsd(tmp_path, "0\n", "")
    [idle] = check_knfsd(host, exportfs=exportfs)
    assert "no threads" in idle.message


def test_knfsd_exports_must_match_what_oneroot_applied(tmp_path: Path) -> None:
    exports = tmp_path / "oneroot.exports"
    exports.write_text("# generated\n/v/default 10.0.0.0/24(ro,all_squash)\n"
                       "/s/node01 10.0.0.11(rw)\n")
    host, exportfs = _fake_nfsd(tmp_path, "8\n", "/v/default\t10.0.0.0/24(ro)\n"
                                                "/home\t*(rw)\n")
    found = list(check_knfsd(host, exports_file=exports, exportfs=exportfs))
    assert [f.level for f in found] == [Level.ERROR, Level.WARNING]
    assert "/s/node01 10.0.0.11" in found[0].message  # applied, not active
    assert "/home *" in found[1].message  # active, not ours
    host, exportfs = _fake_nfsd(tmp_path / "b", "8\n", "/v/default\t10.0.0.0/24(ro)\n"
                                                       "/s/node01\t10.0.0.11(rw)\n")
    [good] = check_knfsd(host, exports_file=exports, exportfs=exportfs)
    assert good.level is Level.OK


def test_no_rebuild_advice_for_the_servers_own_root(tmp_path: Path) -> None:
    """A `/` image without kernel modules: install the kernel on the server, never
    `oneroot image create` (which would make a different image)."""
    root = tmp_path / "server"
    (root / "sbin").mkdir(parents=True)
    (root / "sbin/init").symlink_to("/lib/systemd/systemd")
    (root / "lib/systemd").mkdir(parents=True)
    (root / "lib/systemd/systemd").write_text("")
    inv = make_inventory(images=[Image(name="default", root=PurePosixPath("/"))])
    found = list(doctor.check_images(resolve_cluster(inv), Host(root=root)))
    assert any("kernel modules" in f.message for f in found)
    assert not any("image create" in f.fix for f in found), found
    assert any("install linux-image" in f.fix for f in found)


def _ganesha_cluster(base: Path, image_root: Path, **values: object) -> ResolvedCluster:
    settings = Settings(state_dir=PurePosixPath(base / "systems"),
                        group_dir=PurePosixPath(base / "groups"), **values)  # type: ignore[arg-type]
    return resolve_cluster(make_inventory(settings=settings, image_root=image_root))


def _paths(base: Path) -> Paths:
    return Paths(home=base / "home")


def test_ganesha_images_and_layers_on_shared_filesystems_are_errors(tmp_path: Path) -> None:
    """nfs-ganesha has no subtree check: an image directory exported as it is opens its
    whole filesystem, and so do layers with layer_fs=shared (test_nfs_ganesha_handles)."""
    image = tmp_path / "image"
    image.mkdir()
    found = list(check_ganesha_filesystems(_ganesha_cluster(tmp_path, image), _paths(tmp_path)))
    assert [f.level for f in found] == [Level.WARNING, Level.ERROR]
    assert "node layer(s) not yet a filesystem of their own" in found[0].message
    assert f"image default ({image}) is exported from the filesystem at" in found[1].message
    shared = list(check_ganesha_filesystems(
        _ganesha_cluster(tmp_path, image, layer_fs=LayerFs.SHARED), _paths(tmp_path)))
    assert shared[0].level is Level.ERROR and "layer_fs=shared" in shared[0].message
    assert "layer_fs=own" in shared[0].fix


def test_the_live_root_is_exported_through_its_view_not_as_it_is(tmp_path: Path) -> None:
    found = list(check_ganesha_filesystems(_ganesha_cluster(tmp_path, Path("/")),
                                               _paths(tmp_path)))
    assert not [f for f in found if "image" in f.message]


def test_an_image_export_without_subtree_check_on_a_shared_filesystem_is_an_error(
        tmp_path: Path) -> None:
    """knfsd: image `own` is its own disk when the exports are applied (`no_subtree_check`),
    then unmounted by hand: its export now reaches the server's `/` (forged handles). Doctor
    says so from the applied exports file and the mount table; rendered on `/` alone it is
    `subtree_check` and nothing is reported."""
    root = MountEntry(mount_point=Path("/"), fstype="ext4", source="/dev/vda1", options="rw")
    disk = MountEntry(mount_point=Path("/srv/images/own"), fstype="ext4", source="/dev/vdb",
                      options="ro")
    inv = make_inventory(image_root="/srv/images/bookworm",
                         nodes=[make_node(1), make_node(2, image="own")],
                         images=[Image(name="own", root=PurePosixPath("/srv/images/own"))])
    exports = tmp_path / "oneroot.exports"
    exports.write_text(nfs_plan(resolve_cluster(inv), Paths(), kind=NfsServerKind.KNFSD,
                                mounts=[root, disk]).text)
    assert list(check_export_subtrees(exports_file=exports, mounts=[root, disk])) == []
    [found] = check_export_subtrees(exports_file=exports, mounts=[root])
    assert found.level is Level.ERROR and found.check == "knfsd-subtree"
    assert "image own (/srv/images/own) is exported no_subtree_check" in found.message
    assert "the one at /" in found.message and "nfs apply" in found.fix
    # a bind of a subdirectory there is no filesystem of its own either
    bound = MountEntry(mount_point=Path("/srv/images/own"), fstype="ext4", source="/dev/vda1",
                       options="ro", root="/data/own")
    assert [f.check for f in check_export_subtrees(exports_file=exports,
                                                  mounts=[root, bound])] == ["knfsd-subtree"]
    exports.write_text(nfs_plan(resolve_cluster(inv), Paths(), kind=NfsServerKind.KNFSD,
                                mounts=[root]).text)
    assert list(check_export_subtrees(exports_file=exports, mounts=[root])) == []


def test_a_layer_export_without_subtree_check_on_the_state_filesystem_is_an_error(
        tmp_path: Path) -> None:
    """knfsd without a view of `/`: an exports file applied `no_subtree_check` (by an older
    oneroot) for layers on the state filesystem lets node02 forge handles into node01's
    layer. Doctor names each layer export (`knfsd-subtree`); a layer that is a disk of its
    own and a server-side union (overlayfs) are not reported; rendered now, nothing is."""
    root = MountEntry(mount_point=Path("/"), fstype="ext4", source="/dev/vda1", options="rw")
    state = MountEntry(mount_point=Path("/var/state"), fstype="ext4", source="/dev/loop0",
                       options="rw,nosuid,nodev")
    own = MountEntry(mount_point=Path("/var/state/systems/node02"), fstype="ext4",
                     source="/dev/vdc", options="rw")
    inv = make_inventory(image_root="/srv/images/bookworm", groups=[layer_group("compute")],
                         nodes=[make_node(1, groups=("default", "compute")), make_node(2),
                                make_node(3, union="server")])
    mounts = [root, state, own]
    text = nfs_plan(resolve_cluster(inv), Paths(), kind=NfsServerKind.KNFSD, running=(),
                    mounts=mounts).text
    exports = tmp_path / "oneroot.exports"
    exports.write_text(text)
    assert list(check_export_subtrees(exports_file=exports, mounts=mounts)) == []
    exports.write_text(text.replace(",subtree_check", ",no_subtree_check"))
    found = list(check_export_subtrees(exports_file=exports, mounts=mounts))
    assert {f.check for f in found} == {"knfsd-subtree"}
    assert [f.message.split(" is exported")[0] for f in found] == [
        "image default (/srv/images/bookworm)",
        "diff-overlay of node node01 (/var/state/systems/node01)",
        "layer of group compute (/var/state/groups/compute)"]
    assert "on the one at /var/state" in found[1].message
    assert "reads and writes every layer on it" in found[1].message
    assert "should reboot" in found[1].fix
