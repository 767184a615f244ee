"""The result values `ops` hands the CLI: their JSON form is the one `--json` always printed."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path, PurePosixPath

from oneroot.model import NfsServerKind
from oneroot.net import MacAddress
from oneroot.ops.leases import UnknownClient
from oneroot.ops.nfs_serving import NfsStatus, ViewStatus
from oneroot.ops.status import NodeBootStatus, StatusReport
from oneroot.render.context import Access, NfsExport


def test_status_report_json_keys_and_values() -> None:
    report = StatusReport(time=100.0, server={"pid": 7}, nodes=(
        NodeBootStatus(node="node01", ip=ipaddress.IPv4Address("10.0.0.2"), stage="union",
                       time=90.0, age_seconds=10.0, detail={"message": "multi-user.target"}),
        NodeBootStatus(node="node02", ip=ipaddress.IPv4Address("10.0.0.3"),
                       stage="never booted", time=None, age_seconds=None, detail={}),
    ))
    assert json.dumps(report.as_json()) == (
        '{"time": 100.0, "nodes": [{"node": "node01", "ip": "10.0.0.2", "stage": "union", '
        '"time": 90.0, "age_seconds": 10.0, "detail": {"message": "multi-user.target"}}, '
        '{"node": "node02", "ip": "10.0.0.3", "stage": "never booted", "time": null, '
        '"age_seconds": null, "detail": {}}], "server": {"pid": 7}}')
    assert [n.detail_text for n in report.nodes] == ["multi-user.target", ""]


def test_unknown_client_json() -> None:
    client = UnknownClient(mac=MacAddress.parse("52:54:00:aa:00:01"), address=None, arch=7,
                           vendor_class="PXEClient", first_seen=0.0, last_seen=0.0)
    row = client.as_json()
    assert list(row) == ["mac", "address", "arch", "vendor_class", "first_seen", "last_seen"]
    assert row["mac"] == "52:54:00:aa:00:01" and row["address"] is None
    assert row["first_seen"] == client.first_seen_text
    pooled = UnknownClient(mac=client.mac, address=ipaddress.IPv4Address("10.0.0.200"),
                           arch=None, vendor_class=None, first_seen=0.0, last_seen=0.0)
    assert pooled.as_json()["address"] == "10.0.0.200"


def test_nfs_status_json() -> None:
    st = NfsStatus(server=NfsServerKind.KNFSD, ganesha_pid=None, config=Path("/etc/x"),
                   views={"default": ViewStatus(mountpoint=Path("/v/default"), mounted=False)},
                   exports=(NfsExport(export_id=1, path=PurePosixPath("/srv/img"),
                                      access=Access.RO, clients=("10.0.0.2",),
                                      comment="image"),))
    assert json.dumps(st.as_json()) == (
        '{"server": "knfsd", "ganesha_pid": null, "config": "/etc/x", "views": {"default": '
        '{"mountpoint": "/v/default", "mounted": false}}, "exports": [{"path": "/srv/img", '
        '"access": "ro", "clients": ["10.0.0.2"]}]}')
