"""Cluster-wide files: /etc/exports, nfs-ganesha, dnsmasq."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from oneroot.errors import ConfigError
from oneroot.model import DhcpMode
from oneroot.render import (
    Access,
    ClusterContext,
    GroupLayerExport,
    ImageExport,
    nfs_exports,
    render_dnsmasq,
    render_exports,
    render_ganesha,
)
from oneroot.render._env import HEADER
from oneroot.render.context import CephExports
from oneroot.testing.render_example import GoldenCheck, example_cluster

DNSMASQ = "/usr/sbin/dnsmasq"


def test_goldens(cluster: ClusterContext, golden: GoldenCheck) -> None:
    golden("exports", render_exports(cluster))
    golden("ganesha.conf", render_ganesha(cluster))
    golden("dnsmasq.conf", render_dnsmasq(cluster))


def test_every_file_says_it_is_generated(cluster: ClusterContext) -> None:
    for render in (render_exports, render_ganesha, render_dnsmasq):
        assert render(cluster).splitlines()[0] == f"# {HEADER}"


def test_exports_match_the_seed(cluster: ClusterContext) -> None:
    lines = [ln for ln in render_exports(cluster).splitlines() if ln and not ln.startswith("#")]
    assert ("/var/lib/oneroot/views/default "
            "10.0.0.0/24(ro,sync,all_squash,anonuid=65534,anongid=65534,no_subtree_check,mp,"
            "crossmnt,fsid=1)") in lines
    assert ("/var/state/systems/node01 10.0.0.11(rw,sync,no_root_squash,no_subtree_check)"
            in lines)
    assert ("/var/state/groups/compute 10.0.0.12(ro,sync,root_squash,no_subtree_check) "
            "10.0.0.13(ro,sync,root_squash,no_subtree_check)") in lines
    # node04 is ephemeral: whatever it writes must not outlive its boot
    assert "/var/state/systems/node04 10.0.0.14(ro,sync,no_root_squash,no_subtree_check)" in lines


def test_a_server_union_export_has_its_export_id_as_fsid(cluster: ClusterContext) -> None:
    """knfsd cannot derive a filesystem id for an overlayfs mount (the merged dir)."""
    (node05,) = [n for n in cluster.nodes if n.server_union]
    lines = [ln for ln in render_exports(cluster).splitlines() if ln and not ln.startswith("#")]
    assert (f"/var/state/systems/node05/merged 10.0.0.15(rw,sync,no_root_squash,"
            f"no_subtree_check,fsid={node05.export_id})") in lines
    assert render_exports(cluster) == render_exports(example_cluster())  # stable


def test_plain_node_dirs_get_no_fsid(cluster: ClusterContext) -> None:
    """A new fsid would turn the handles a running client-mode node holds stale."""
    plain = [n for n in cluster.nodes if not n.server_union]
    assert plain
    by_path = {e.path: e for e in nfs_exports(cluster)}
    for node in plain:
        assert by_path[node.export_path].fsid is None
        assert "fsid" not in by_path[node.export_path].knfsd_options


def test_fsids_are_unique_and_never_the_v4_root(cluster: ClusterContext) -> None:
    (node05,) = [n for n in cluster.nodes if n.server_union]
    twin = dataclasses.replace(node05, name="node06", export_id=106,
                               export_path=PurePosixPath("/var/state/systems/node06/merged"),
                               address=ipaddress.IPv4Address("10.0.0.16"))
    fsids = [e.fsid for e in nfs_exports(dataclasses.replace(
        cluster, nodes=(*cluster.nodes, twin))) if e.fsid is not None]
    assert len(fsids) == len(set(fsids)) == len(cluster.images) + 2
    assert 0 not in fsids
    clash = dataclasses.replace(twin, export_id=node05.export_id)
    with pytest.raises(ConfigError, match="same export id"):
        render_exports(dataclasses.replace(cluster, nodes=(*cluster.nodes, clash)))


def test_each_node_dir_goes_to_that_node_alone(cluster: ClusterContext) -> None:
    by_path = {e.path: e for e in nfs_exports(cluster)}
    for node in cluster.nodes:
        export = by_path[node.export_path]
        assert export.access is (Access.RO if node.read_only else Access.RW)
        assert export.clients == (str(node.address),)
    assert all(e.access is Access.RO for e in nfs_exports(cluster)
               if e.path not in {n.export_path for n in cluster.nodes})


def test_a_group_layer_nobody_uses_is_not_exported(cluster: ClusterContext) -> None:
    """An exports line without clients would export the directory to the world."""
    paths = {e.path for e in nfs_exports(cluster)}
    assert PurePosixPath("/var/state/groups/unused") not in paths
    assert "unused" not in render_exports(cluster)
    assert "unused" not in render_ganesha(cluster)


def test_ganesha_restricts_every_export(cluster: ClusterContext) -> None:
    text = render_ganesha(cluster)
    assert text.count("EXPORT {") == len(nfs_exports(cluster)) == text.count("CLIENT {")
    assert "Access_Type = None;" in text
    assert "Only_Numeric_Owners = true;" in text
    assert "Bind_addr = 10.0.0.1;" in text
    assert 'Path = "/var/state/systems/node01";\n    Pseudo = "/var/state/systems/node01";' in text
    assert "Clients = 10.0.0.12, 10.0.0.13;\n        Access_Type = RO;" in text


def test_ganesha_protocols(cluster: ClusterContext) -> None:
    v4_only = dataclasses.replace(cluster, nfs_protocols=(4,))
    text = render_ganesha(v4_only)
    # NFS_CORE_PARAM, EXPORT_DEFAULTS and every CLIENT (else ganesha warns and "fixes up").
    assert text.count("Protocols = 4;") == 2 + len(nfs_exports(v4_only))
    assert "3" not in "".join(ln for ln in text.splitlines() if "Protocols" in ln)
    with pytest.raises(ConfigError):
        render_ganesha(dataclasses.replace(cluster, nfs_protocols=(2,)))


def test_duplicate_export_ids_are_refused(cluster: ClusterContext) -> None:
    clash = GroupLayerExport(name="x", path=PurePosixPath("/srv/x"), export_id=1,
                             clients=(ipaddress.IPv4Address("10.0.0.11"),))
    with pytest.raises(ConfigError, match="same export id 1"):
        render_exports(dataclasses.replace(cluster, group_layers=(clash,)))


def test_duplicate_paths_are_refused(cluster: ClusterContext) -> None:
    twin = ImageExport(name="twin", path=PurePosixPath("/var/lib/oneroot/views/default"),
                       export_id=9, view=True)
    with pytest.raises(ConfigError, match="same path"):
        render_ganesha(dataclasses.replace(cluster, images=(*cluster.images, twin)))


@pytest.mark.parametrize("export_id", [0, 65536])
def test_export_id_range(cluster: ClusterContext, export_id: int) -> None:
    image = ImageExport(name="default", path=PurePosixPath("/srv/img"), export_id=export_id)
    with pytest.raises(ConfigError, match="outside"):
        nfs_exports(dataclasses.replace(cluster, images=(image,)))


def test_exports_escapes_white_space_in_paths(cluster: ClusterContext) -> None:
    image = ImageExport(name="odd", path=PurePosixPath("/srv/my image"), export_id=1)
    text = render_exports(dataclasses.replace(cluster, images=(image,)))
    assert "/srv/my\\040image 10.0.0.0/24(" in text


def test_dnsmasq_per_node_lines(cluster: ClusterContext) -> None:
    text = render_dnsmasq(cluster)
    assert "port=0\n" in text
    assert "dhcp-range=10.0.0.0,static,255.255.255.0,86400\n" in text
    assert ("dhcp-host=52:54:00:00:00:02,52:54:00:00:01:02,set:oneroot-node02,10.0.0.12,node02"
            in text)
    assert "dhcp-boot=tag:oneroot-node04,tag:!ipxe,tag:!uefi,pxelinux.0" in text
    assert "dhcp-boot=tag:oneroot-node03,tag:!ipxe,tag:uefi,snponly.efi" in text
    assert ("dhcp-boot=tag:oneroot-node01,tag:ipxe,http://10.0.0.1:8080/boot/node01.ipxe"
            in text)


def test_dnsmasq_without_optional_settings(cluster: ClusterContext) -> None:
    settings = dataclasses.replace(cluster.settings, gateway=None, dns=(), domain=None)
    text = render_dnsmasq(dataclasses.replace(cluster, settings=settings))
    assert "router" not in text
    assert "dns-server" not in text
    assert "domain=" not in text


def test_dnsmasq_refuses_proxy_mode(cluster: ClusterContext) -> None:
    settings = dataclasses.replace(cluster.settings, dhcp_mode=DhcpMode.PROXY)
    with pytest.raises(ConfigError, match="full"):
        render_dnsmasq(dataclasses.replace(cluster, settings=settings))


@pytest.mark.skipif(not Path(DNSMASQ).exists(), reason="needs dnsmasq")
def test_dnsmasq_accepts_the_config(cluster: ClusterContext, tmp_path: Path) -> None:
    settings = dataclasses.replace(cluster.settings, boot_dir=PurePosixPath(tmp_path))
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text(render_dnsmasq(dataclasses.replace(cluster, settings=settings)))
    result = subprocess.run([DNSMASQ, "--test", f"--conf-file={conf}"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    # ...and it is not a check that accepts anything.
    conf.write_text(conf.read_text() + "no-such-option\n")
    assert subprocess.run([DNSMASQ, "--test", f"--conf-file={conf}"], capture_output=True,
                          check=False).returncode != 0



@pytest.mark.parametrize("root", ["/", "/var", "/var/state"])
def test_a_live_root_is_never_exported_unmasked(cluster: ClusterContext, root: str) -> None:
    """`/` (or a tree holding the state dir) goes out only as its masked view: an exports file
    or a ganesha config naming it as it is cannot be rendered."""
    live = dataclasses.replace(cluster, images=(
        ImageExport(name="default", path=PurePosixPath(root), export_id=1),))
    for render in (render_exports, render_ganesha):
        with pytest.raises(ConfigError, match="live root"):
            render(live)
    masked = dataclasses.replace(cluster, images=(ImageExport(
        name="default", path=PurePosixPath("/v/default"), export_id=1, view=True),))
    assert ("\n/v/default 10.0.0.0/24(ro,sync,all_squash,anonuid=65534,anongid=65534,"
            "no_subtree_check,mp,") in render_exports(masked)
    ganesha = render_ganesha(masked)
    block = ganesha[ganesha.index("# image default"):]
    assert block.index("Attr_Expiration_Time = 10;") < block.index("}\n}")
    # every user of every node is nobody on the view (a forged handle reads only what
    # others may read), and only there: layers keep their owners
    assert ("Squash = All_Squash;\n        Anonymous_Uid = 65534;\n        Anonymous_Gid = 65534;"
            in block.split("}\n}")[0])
    assert ganesha.count("All_Squash") == 1 and render_exports(masked).count("all_squash") == 1


def _ceph(cluster: ClusterContext, mount: str = "/") -> ClusterContext:
    """The example without its live-root image, exported from CephFS mounted at `mount`."""
    return dataclasses.replace(
        cluster, images=tuple(i for i in cluster.images if not i.view),
        ceph=CephExports(mount=PurePosixPath(mount), conf=PurePosixPath("/etc/ceph/ceph.conf"),
                         user="oneroot-a", fs_name="cephfs", nodeid="10.0.0.1"))


def _blocks(text: str, name: str) -> list[str]:
    return re.findall(rf"^ *{name} \{{\n.*?^ *\}}", text, re.MULTILINE | re.DOTALL)


def test_ganesha_ceph_keeps_every_client_restriction(cluster: ClusterContext) -> None:
    ceph = _ceph(cluster)
    vfs_text = render_ganesha(dataclasses.replace(ceph, ceph=None))
    text = render_ganesha(ceph)
    # The same exports to the same clients with the same access: only the FSAL differs.
    assert _blocks(text, "CLIENT") == _blocks(vfs_text, "CLIENT")
    assert len(_blocks(text, "CLIENT")) == len(nfs_exports(ceph)) == text.count("Name = CEPH;")
    assert "Name = VFS;" not in text
    # Each export its own cephx user (MDS caps on its path: a forged handle is refused).
    users = re.findall(r'User_Id = "(oneroot-a-export-(\d+)-[0-9a-f]{8})";', text)
    assert sorted(int(i) for _, i in users) == sorted(e.export_id for e in nfs_exports(ceph))
    assert len({u for u, _ in users}) == len(users)
    shared = render_ganesha(dataclasses.replace(ceph, ceph=dataclasses.replace(
        ceph.ceph, per_export_users=False)))  # type: ignore[arg-type]
    assert shared.count('User_Id = "oneroot-a";') == len(nfs_exports(ceph))
    assert 'Filesystem = "cephfs";' in text
    # Clustered recovery instead of no grace at all.
    assert "RecoveryBackend = rados_cluster;" in text and "Graceless" not in text
    assert 'Nodeid = "10.0.0.1";' in _blocks(text, "RADOS_KV")[0]
    assert "Graceless = true;" in vfs_text


def test_ganesha_ceph_paths_are_inside_cephfs(cluster: ClusterContext) -> None:
    text = render_ganesha(_ceph(dataclasses.replace(cluster, images=()), "/var/state"))
    # The FSAL path is the path inside CephFS; the pseudo path (what `root=` names) stays.
    assert 'Path = "/systems/node01";\n    Pseudo = "/var/state/systems/node01";' in text
    with pytest.raises(ConfigError, match="outside CephFS"):
        render_ganesha(_ceph(cluster, "/var/state"))  # the gentoo image lives in /srv


def test_ganesha_ceph_refuses_a_live_root(cluster: ClusterContext) -> None:
    live = dataclasses.replace(_ceph(cluster), images=cluster.images)
    with pytest.raises(ConfigError, match="no CephFS equivalent") as err:
        render_ganesha(live)
    assert "image create" in (err.value.hint or "")
