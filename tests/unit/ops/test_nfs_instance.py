"""`oneroot nfs instance`: what needs no Ceph (refusals, the notify record, held addresses)."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path, PurePosixPath

import pytest

from oneroot.errors import ConfigError
from oneroot.model import NfsServerKind, resolve_cluster
from oneroot.model.haservers import parse_ha_servers
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster
from oneroot.ops import nfs_instance
from oneroot.ops.nfs_serving import ganesha_server
from oneroot.testing.inventory import make_inventory, settings_under

HA = "a:127.0.0.1:10.0.0.2 b:10.0.0.103:10.0.0.3"


def _cluster(tmp_path: Path, kind: NfsServerKind, ha: str = HA) -> ResolvedCluster:
    settings = dataclasses.replace(
        settings_under(tmp_path, nfs_server=kind, cephfs_mount=PurePosixPath(tmp_path)),
        ha_servers=parse_ha_servers(ha))
    return resolve_cluster(make_inventory(nodes=1, settings=settings, image_root=tmp_path))


def test_serve_leaves_the_instances_to_keepalived(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path, NfsServerKind.GANESHA_CEPH)
    with pytest.raises(ConfigError, match="run by `oneroot nfs keepalived`") as err:
        ganesha_server(cluster, Paths(home=tmp_path / "home"))
    assert "--no-nfs" in (err.value.hint or "")


def test_instances_need_ganesha_ceph_and_notify_records_why(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path, NfsServerKind.GANESHA)
    paths = Paths(home=tmp_path / "home")
    with pytest.raises(ConfigError, match="nfs_server=ganesha-ceph"):
        nfs_instance.start_instance(cluster, paths, "a")
    line = nfs_instance.notify(cluster, paths, "oneroot_b", "MASTER")
    assert line.endswith("b MASTER error: ganesha instances that fail over need "
                         "nfs_server=ganesha-ceph (it is ganesha)")
    record = paths.run_dir / "ganesha-instances" / "notify.log"
    assert record.read_text() == line + "\n"


def test_a_stop_where_nothing_runs_and_the_address_is_not_held(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path, NfsServerKind.GANESHA_CEPH)
    paths = Paths(home=tmp_path / "home")
    done = nfs_instance.stop_instance(cluster, paths, "10.0.0.103")
    assert (done.name, done.pid, done.evicted) == ("b", None, 0)
    status = {st.name: st for st in nfs_instance.instance_status(cluster, paths)}
    assert status["a"].held and not status["b"].held  # 127.0.0.1 is this host's
    assert status["b"].pid is None and not status["b"].listening
    assert nfs_instance.holds_address(ipaddress.IPv4Address("127.0.0.1"))


def test_a_node_rebound_to_the_other_server_mounts_from_its_service_address(
        tmp_path: Path) -> None:
    from oneroot.errors import NotFound
    from oneroot.model.inventory import validate
    from oneroot.ops.boot import root_spec_text

    cluster = _cluster(tmp_path, NfsServerKind.GANESHA_CEPH,
                       "a:10.0.0.102:10.0.0.2 b:10.0.0.103:10.0.0.3")
    before = root_spec_text(cluster, cluster.node("node01"))
    assert f"{cluster.settings.server_address}:" in before and "10.0.0.103" not in before
    inv = cluster.inventory
    node = dataclasses.replace(inv.nodes["node01"], overrides={"server": "b"})
    rebound = resolve_cluster(inv.with_nodes([node]))
    after = root_spec_text(rebound, rebound.node("node01"))
    assert after == before.replace(f"{cluster.settings.server_address}:", "10.0.0.103:")
    unknown = dataclasses.replace(node, overrides={"server": "c"})
    with pytest.raises(NotFound, match="unknown server 'c'"):
        validate(inv.with_nodes([unknown]))
