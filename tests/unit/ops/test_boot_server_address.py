"""Which address a node's root= mounts from, and the address a server of `ha_servers`
answers on: never one that dies with its server (`ops.boot.nfs_server_address`,
`model.server.ServerRole`)."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from oneroot.errors import InvalidValue
from oneroot.model import resolve_cluster
from oneroot.model.haservers import parse_ha_servers
from oneroot.model.resolved import ResolvedCluster
from oneroot.model.server import ServerRole
from oneroot.ops.boot import root_spec_text
from oneroot.rootspec import NfsLayer, parse
from oneroot.serve.app import network_config
from oneroot.testing.inventory import make_inventory, settings_under

HA = "a:10.0.0.102:10.0.0.2 b:10.0.0.103:10.0.0.3"


def _servers(cluster: ResolvedCluster, node: str = "node01") -> set[str]:
    spec = parse(root_spec_text(cluster, cluster.node(node)))
    return {layer.server for layer in spec.layers if isinstance(layer, NfsLayer)}


def _cluster(tmp_path: Path, role: ServerRole, *, ha: str = HA, pinned: str = ""
             ) -> ResolvedCluster:
    settings = dataclasses.replace(settings_under(tmp_path),
                                   ha_servers=parse_ha_servers(ha))
    inv = make_inventory(nodes=1, settings=settings, image_root=tmp_path)
    if pinned:
        inv = inv.with_nodes([dataclasses.replace(inv.nodes["node01"],
                                                  overrides={"server": pinned})])
    return resolve_cluster(inv.replace(settings=role.apply(inv.settings)))


def test_a_node_mounts_from_the_service_address_of_the_server_that_answers(
        tmp_path: Path) -> None:
    # B answers on its host address, which dies with it; its service address moves.
    for name, service in (("a", "10.0.0.102"), ("b", "10.0.0.103")):
        cluster = _cluster(tmp_path, ServerRole(id=name))
        assert cluster.settings.server_address == IPv4Address(f"10.0.0.{2 + (name == 'b')}")
        assert _servers(cluster) == {service}


def test_a_pinned_node_mounts_from_its_servers_service_address_whoever_answers(
        tmp_path: Path) -> None:
    assert _servers(_cluster(tmp_path, ServerRole(id="b"), pinned="a")) == {"10.0.0.102"}


def test_without_ha_servers_a_node_mounts_from_the_server_address(tmp_path: Path) -> None:
    role = ServerRole(id="b", address=IPv4Address("10.0.0.3"))
    assert _servers(_cluster(tmp_path, role, ha="")) == {"10.0.0.3"}
    # A server with no id alone on its service address (the failover tests' serve) keeps it.
    assert _servers(_cluster(tmp_path, ServerRole(address=IPv4Address("10.0.0.102")))) == {
        "10.0.0.102"}


@pytest.mark.parametrize(("role", "match"), [
    (ServerRole(id="c"), "'c' is not in the setting ha_servers"),
    (ServerRole(id="b", address=IPv4Address("10.0.0.9")), "ha_servers gives it the host "
                                                          "address 10.0.0.3"),
    (ServerRole(id="b", address=IPv4Address("10.0.0.103")), "host address 10.0.0.3"),
])
def test_a_server_of_an_ha_cluster_off_its_host_address_is_refused(
        tmp_path: Path, role: ServerRole, match: str) -> None:
    with pytest.raises(InvalidValue, match=match) as err:
        _cluster(tmp_path, role)
    assert err.value.hint


def test_an_ha_members_dhcp_server_id_is_its_service_address(tmp_path: Path) -> None:
    """A client's unicast RENEW goes to the server id: the service address moves to a peer
    when the server dies, its host address does not."""
    settings = dataclasses.replace(settings_under(tmp_path), ha_servers=parse_ha_servers(HA))
    inv = make_inventory(nodes=1, settings=settings, image_root=tmp_path)
    member = network_config(inv.replace(settings=ServerRole(id="b").apply(inv.settings)))
    assert (member.server_address, member.identifier) == (IPv4Address("10.0.0.3"),
                                                          IPv4Address("10.0.0.103"))
    plain = network_config(inv.replace(settings=dataclasses.replace(settings, ha_servers=())))
    assert plain.server_id is None and plain.identifier == plain.server_address
