"""`oneroot power` and `oneroot node reboot` against real IPMI 2.0 BMCs (OpenIPMI's ipmi_sim on
loopback), as a user runs them: many nodes at once, one row each, and one `error:`/`hint:`
for a wrong password, an unreachable BMC or a node without one, with nothing changed."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyghmi.ipmi.private import session

from oneroot.bmc.common import BmcCredentials, PowerState
from oneroot.bmc.ipmi import Bmc
from oneroot.errors import BmcError
from oneroot.testing.bmc import BmcHome, SimulatedBmc, one_error
from oneroot.testing.bmc import power_rows as rows
from oneroot.testing.ports import free_port

PASSWORD = "pw-6f1d2a"  # must never show up in output, logs or YAML


@dataclass(frozen=True)
class Cluster:
    nodes: BmcHome
    bmcs: dict[str, SimulatedBmc]

    @property
    def password_file(self) -> Path:
        return self.nodes.password_file

    def oneroot(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.nodes.oneroot(*args, check=check)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """node01-03 with simulated BMCs; node04's BMC does not answer; node05 has none; node06's
    BMC has another password. The BMC user and password file are set on the group."""
    base = tmp_path_factory.mktemp("power")
    with ExitStack() as stack:
        bmcs = {f"node0{i}": stack.enter_context(
            SimulatedBmc(base / f"bmc0{i}", user="admin", password=PASSWORD))
            for i in (1, 2, 3, 6)}
        nodes = BmcHome.create(base, password=PASSWORD, nodes=6, mac_prefix="52:54:00:00:00",
                               ip_prefix="10.0.0.1")
        for name, bmc in bmcs.items():
            nodes.set(name, f"bmc_address={bmc.address}")
        nodes.set("node04", f"bmc_address=127.0.0.1:{free_port(udp=True)}")
        nodes.set("node06", f"bmc_password_file={nodes.wrong_password_file}")
        yield Cluster(nodes=nodes, bmcs=bmcs)


def test_on_off_status_for_a_range(cluster: Cluster) -> None:
    status = rows(cluster.oneroot("power", "status", "node[01-03]", "--json"))
    assert [status[n]["state"] for n in ("node01", "node02", "node03")] == ["off"] * 3
    shown = cluster.oneroot("power", "on", "node[01-03]").stdout
    assert all(f"node0{i}" in shown for i in (1, 2, 3)) and shown.count(" ok") == 3
    assert all(cluster.bmcs[f"node0{i}"].power for i in (1, 2, 3))
    cluster.oneroot("power", "off", "node02")
    assert not cluster.bmcs["node02"].power and cluster.bmcs["node01"].power
    after = rows(cluster.oneroot("power", "status", "node[01-03]", "--json"))
    assert {n: r["state"] for n, r in after.items()} == {
        "node01": "on", "node02": "off", "node03": "on"}
    # The BMC side's stages: what `oneroot status` (and serve's page) shows.
    assert stages(cluster) | {"node01": "power-on", "node02": "off", "node03": "power-on"
                              } == stages(cluster)


def test_reboot_with_pxe_cycles_and_sets_the_boot_device(cluster: Cluster) -> None:
    cluster.oneroot("power", "on", "node01")
    before = len(cluster.bmcs["node01"].requests())
    result = rows(cluster.oneroot("node", "reboot", "node01", "--pxe", "--json"))
    assert result["node01"]["ok"] and result["node01"]["state"] == "on"
    asked = cluster.bmcs["node01"].requests()[before:]
    assert "set boot pxe" in asked
    assert asked.index("set power 0") < asked.index("set power 1")  # a real cycle
    assert cluster.bmcs["node01"].boot == "pxe"


def test_reset_and_cycle_of_an_off_node(cluster: Cluster) -> None:
    cluster.oneroot("power", "off", "node03")
    cluster.oneroot("power", "cycle", "node03")  # an off node is powered on
    assert cluster.bmcs["node03"].power
    before = len(cluster.bmcs["node03"].requests())
    cluster.oneroot("power", "reset", "node03")
    assert "set reset 1" in cluster.bmcs["node03"].requests()[before:]


def stages(cluster: Cluster) -> dict[str, str]:
    report = json.loads(cluster.oneroot("status", "--json").stdout)
    return {n["node"]: n["stage"] for n in report["nodes"]}


def test_wrong_password_is_one_error_and_changes_nothing(cluster: Cluster) -> None:
    asked = len(cluster.bmcs["node06"].requests())
    error, hint = one_error(cluster.oneroot("power", "on", "node06", check=False))
    assert "refused user 'admin'" in error and "bmc_password_file" in hint
    assert not cluster.bmcs["node06"].power
    assert len(cluster.bmcs["node06"].requests()) == asked
    assert stages(cluster)["node06"] == "never booted"  # no `power-on` recorded


def test_unreachable_bmc_and_node_without_one(cluster: Cluster) -> None:
    error, hint = one_error(cluster.oneroot("power", "status", "node04", check=False))
    assert "no answer from the BMC" in error and "management network" in hint
    error, hint = one_error(cluster.oneroot("power", "on", "node05", check=False))
    assert "node05 has no BMC" in error and "bmc_address" in hint


def test_one_table_for_many_nodes_with_failures(cluster: Cluster) -> None:
    result = cluster.oneroot("power", "status", "node[01-06]", "--json", check=False)
    assert result.returncode != 0
    by_node = rows(result)
    assert list(by_node) == [f"node0{i}" for i in range(1, 7)]  # the order they were named
    assert [n for n, r in by_node.items() if not r["ok"]] == ["node04", "node05", "node06"]
    assert "error: 3 of 6 nodes failed: node04, node05, node06" in result.stderr


def test_password_stays_out_of_the_inventory(cluster: Cluster) -> None:
    exported = cluster.oneroot("inventory", "export").stdout
    assert str(cluster.password_file) in exported and PASSWORD not in exported
    shown = cluster.oneroot("node", "show", "node01", "--json").stdout
    assert PASSWORD not in shown


def test_password_file_readable_by_others_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    loose = tmp_path / "loose.pw"
    loose.write_text(PASSWORD + "\n")
    loose.chmod(0o644)
    cluster.oneroot("node", "set", "node02", "--set", f"bmc_password_file={loose}")
    try:
        error, hint = one_error(cluster.oneroot("power", "on", "node02", check=False))
        assert "can be read by others" in error and hint == f"hint: chmod 600 {loose}"
    finally:
        cluster.oneroot("node", "set", "node02", "--unset", "bmc_password_file")


def test_one_process_opens_sessions_to_one_bmc_again_and_again(tmp_path: Path) -> None:
    """`oneroot serve`'s admin page powers one node more than once in one process. pyghmi kept
    the logged-out session and handed it to the next one, which failed inside pyghmi
    (TypeError) and showed as an internal error."""
    with SimulatedBmc(tmp_path / "bmc", user="admin", password=PASSWORD) as sim:
        creds = BmcCredentials(host="127.0.0.1", port=sim.port, user="admin",
                               password=PASSWORD)
        for on in (True, False, True):
            with Bmc(creds) as bmc:
                bmc.power_on() if on else bmc.power_off()
            with Bmc(creds) as bmc:
                assert bmc.power_state() is (PowerState.ON if on else PowerState.OFF)
        assert sim.power is True


def test_a_login_failed_in_another_thread_is_one_bmc_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyghmi ends a failed login in whichever thread reads the session's packets: it logs the
    session out, then records why. `oneroot power` of many nodes (a thread each) under load
    met the session's own thread looking in between: pyghmi's AttributeError ended the whole
    command as an internal error. Here the window is held open: the session's own thread
    waits before each read (so another one reads its packets), and that other thread, once
    it has logged the session out, waits until the session's own thread has returned."""
    own: dict[str, int] = {}
    returned = threading.Event()
    held_open: list[int] = []
    wait_for_rsp = session.Session.wait_for_rsp.__func__  # type: ignore[attr-defined]
    logout = session.Session.logout

    def late_wait(cls: type[session.Session], *args: object, **kwargs: object) -> object:
        if threading.get_ident() == own.get("thread"):
            time.sleep(0.2)
        return wait_for_rsp(cls, *args, **kwargs)

    def held_logout(self: session.Session, sessionok: bool = True) -> None:
        logout(self, sessionok)
        if not sessionok and self.port == own.get("port") and \
                threading.get_ident() != own.get("thread"):
            held_open.append(self.port)
            returned.wait(30)

    monkeypatch.setattr(session.Session, "wait_for_rsp", classmethod(late_wait))
    monkeypatch.setattr(session.Session, "logout", held_logout)
    dead = BmcCredentials(host="127.0.0.1", port=free_port(udp=True), user="admin",
                          password=PASSWORD)
    reader = threading.Thread(target=_try_login, args=(dead,))  # reads every session's packets
    with SimulatedBmc(tmp_path / "bmc", user="admin", password=PASSWORD) as sim:
        reader.start()
        time.sleep(0.5)
        own.update(thread=threading.get_ident(), port=sim.port)
        try:
            wrong = BmcCredentials(host="127.0.0.1", port=sim.port, user="admin",
                                   password="not-it")
            with pytest.raises(BmcError, match="the session failed to start"), Bmc(wrong):
                pass
        finally:
            returned.set()
            reader.join(60)
    assert held_open == [sim.port]  # the race was held open, not missed


def _try_login(creds: BmcCredentials) -> None:
    with contextlib.suppress(BmcError), Bmc(creds):
        pass
