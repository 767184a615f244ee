"""`oneroot power` and `oneroot node reboot` over Redfish (`bmc_protocol=redfish`, sushy)
against sushy-tools' emulator, a real process on loopback with its fake driver: what IPMI's
tests prove against ipmi_sim, here with the emulator's state read back by plain HTTP. The fake
driver drives no VM: the Redfish path is proven against the emulator only (IPMI is the one
proven end to end with real VMs)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from oneroot.testing.bmc import BmcHome, one_error, power_rows
from oneroot.testing.ports import free_port
from oneroot.testing.redfish import RedfishEmulator, self_signed_certificate

PASSWORD = "pw-redfish-58e2"  # must never show up in output, logs or YAML


@dataclass(frozen=True)
class Cluster:
    nodes: BmcHome
    bmc: RedfishEmulator
    https_bmc: RedfishEmulator


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two emulators for the module, one on HTTP, one on HTTPS (a self-signed certificate).
    node01 is the first's system; node02 names it with the wrong password; node03's BMC does
    not answer; node04 is node01's BMC spoken to over IPMI; node05 is the HTTPS one's."""
    base = tmp_path_factory.mktemp("redfish")
    with RedfishEmulator(base / "bmc", user="admin", password=PASSWORD) as bmc, \
            RedfishEmulator(base / "https-bmc", user="admin", password=PASSWORD,
                            tls=True) as https_bmc:
        nodes = BmcHome.create(base, password=PASSWORD, nodes=5, mac_prefix="52:54:00:00:03",
                               ip_prefix="10.0.0.4")
        nodes.oneroot("group", "set", "compute", "--set", "bmc_protocol=redfish")
        nodes.set("node01", f"bmc_address={bmc.address}")
        nodes.set("node02", f"bmc_address={bmc.address}",
                  f"bmc_password_file={nodes.wrong_password_file}")
        nodes.set("node03", f"bmc_address=http://127.0.0.1:{free_port()}")
        nodes.set("node04", "bmc_address=127.0.0.1:1", "bmc_protocol=ipmi")
        nodes.set("node05", f"bmc_address={https_bmc.address}")
        yield Cluster(nodes=nodes, bmc=bmc, https_bmc=https_bmc)


def test_the_protocol_is_inherited_from_the_group(cluster: Cluster) -> None:
    shown = cluster.nodes.oneroot("node", "show", "node01").stdout
    assert "bmc_protocol" in shown and "redfish" in shown and "compute" in shown


def test_on_status_off(cluster: Cluster) -> None:
    bmc, nodes = cluster.bmc, cluster.nodes
    assert bmc.system()["PowerState"] == "Off"
    on = power_rows(nodes.oneroot("power", "on", "node01", "--json"))["node01"]
    assert on["ok"] and on["state"] == "on" and on["bmc"] == bmc.address
    assert bmc.system()["PowerState"] == "On"  # the emulator's own state, by plain HTTP
    assert bmc.changes()[-1]["json"] == {"ResetType": "On"}
    shown = nodes.oneroot("power", "status", "node01").stdout
    assert "node01" in shown and " on " in shown and " ok" in shown
    off = power_rows(nodes.oneroot("power", "off", "node01", "--json"))["node01"]
    assert off["state"] == "off" and bmc.system()["PowerState"] == "Off"
    assert bmc.changes()[-1]["json"] == {"ResetType": "ForceOff"}


def test_cycle_reset_and_reboot_with_pxe(cluster: Cluster) -> None:
    bmc, nodes = cluster.bmc, cluster.nodes
    nodes.oneroot("power", "on", "node01")
    before = len(bmc.changes())
    cycled = power_rows(nodes.oneroot("power", "cycle", "node01", "--json"))["node01"]
    # The emulator offers no PowerCycle: off, seen off, then on.
    assert [c["json"] for c in bmc.changes()[before:]] == [
        {"ResetType": "ForceOff"}, {"ResetType": "On"}]
    assert cycled["state"] == "on" and bmc.system()["PowerState"] == "On"

    before = len(bmc.changes())
    nodes.oneroot("power", "reset", "node01")
    assert [c["json"] for c in bmc.changes()[before:]] == [{"ResetType": "ForceRestart"}]
    assert bmc.wait_power("On") == "On"

    assert bmc.system()["Boot"]["BootSourceOverrideTarget"] != "Pxe"
    before = len(bmc.changes())
    rebooted = power_rows(nodes.oneroot("node", "reboot", "node01", "--pxe", "--json"))
    assert rebooted["node01"]["ok"] and rebooted["node01"]["state"] == "on"
    asked = bmc.changes()[before:]
    # The boot override first, for the next boot only, then the cycle.
    assert asked[0]["method"] == "PATCH"
    assert asked[0]["json"]["Boot"]["BootSourceOverrideTarget"] == "Pxe"
    assert asked[0]["json"]["Boot"]["BootSourceOverrideEnabled"] == "Once"
    assert [c["json"] for c in asked[1:]] == [{"ResetType": "ForceOff"}, {"ResetType": "On"}]
    assert bmc.system()["Boot"]["BootSourceOverrideTarget"] == "Pxe"


def test_wrong_password_is_one_error_and_changes_nothing(cluster: Cluster) -> None:
    bmc, nodes = cluster.bmc, cluster.nodes
    nodes.oneroot("power", "off", "node01")
    boot = bmc.system()["Boot"]
    asked = len(bmc.requests())
    error, hint = one_error(nodes.oneroot("power", "on", "node02", "--pxe", check=False))
    assert "refused user 'admin' (HTTP 401)" in error and "bmc_password_file" in hint
    # Nothing got past authentication: only the public service root was read.
    assert {r["path"] for r in bmc.requests()[asked:]} <= {"/redfish/v1/", "/redfish/v1"}
    assert bmc.system()["PowerState"] == "Off" and bmc.system()["Boot"] == boot


def test_unreachable_bmc_and_node_without_one(cluster: Cluster) -> None:
    nodes = cluster.nodes
    error, hint = one_error(nodes.oneroot("power", "status", "node03", check=False))
    assert "no answer from the BMC at http://127.0.0.1:" in error
    assert "bmc_protocol" in hint and "management network" in hint
    nodes.oneroot("node", "set", "node03", "--unset", "bmc_address")
    try:
        error, hint = one_error(nodes.oneroot("power", "on", "node03", check=False))
        assert "node03 has no BMC" in error and "bmc_address" in hint
    finally:
        nodes.set("node03", f"bmc_address=http://127.0.0.1:{free_port()}")


def test_a_url_is_refused_for_ipmi_and_console_is_ipmi_only(cluster: Cluster) -> None:
    nodes = cluster.nodes
    nodes.set("node04", f"bmc_address={cluster.bmc.address}")
    try:
        error, hint = one_error(nodes.oneroot("power", "status", "node04", check=False))
        assert "is a URL, but IPMI takes HOST[:PORT]" in error
        assert "bmc_protocol=redfish" in hint
    finally:
        nodes.set("node04", "bmc_address=127.0.0.1:1")
    error, hint = one_error(nodes.oneroot("console", "node01", check=False))
    assert "IPMI serial-over-LAN" in error and "bmc_protocol=ipmi" in hint


def test_one_table_for_both_protocols(cluster: Cluster) -> None:
    result = cluster.nodes.oneroot("power", "status", "node[01-04]", "--json", check=False)
    by_node = power_rows(result)
    assert list(by_node) == ["node01", "node02", "node03", "node04"]
    assert [n for n, r in by_node.items() if r["ok"]] == ["node01"]
    assert "error: 3 of 4 nodes failed: node02, node03, node04" in result.stderr


def test_https_certificate_is_checked(cluster: Cluster, tmp_path: Path) -> None:
    bmc, nodes = cluster.https_bmc, cluster.nodes
    seen = len(bmc.requests())  # the emulator's own readiness probe
    # Self-signed: not trusted by the default CAs, so nothing is sent past the handshake.
    error, hint = one_error(nodes.oneroot("power", "on", "node05", check=False))
    assert "has an HTTPS certificate not trusted by the default CAs" in error
    assert "bmc_ca_file" in hint
    assert len(bmc.requests()) == seen
    assert bmc.system()["PowerState"] == "Off"
    seen = len(bmc.requests())
    # Checked against another self-signed certificate: still refused.
    other = tmp_path / "other.pem"
    self_signed_certificate(other, tmp_path / "other.key")
    nodes.set("node05", f"bmc_ca_file={other}")
    error, _ = one_error(nodes.oneroot("power", "on", "node05", check=False))
    assert f"has an HTTPS certificate not trusted against {other}" in error
    assert len(bmc.requests()) == seen
    nodes.set("node05", f"bmc_ca_file={bmc.ca_file}")
    on = power_rows(nodes.oneroot("power", "on", "node05", "--json"))["node05"]
    assert on["ok"] and on["bmc"] == bmc.address and bmc.system()["PowerState"] == "On"
