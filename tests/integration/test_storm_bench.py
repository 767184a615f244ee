"""The boot-storm harness (bench/storm) end to end at N = 5: both servers, every node booted.

Not a timing test: it proves that the bench's nodes do what a node does (DHCP as a PXE ROM,
TFTP, DHCP as iPXE, HTTP, udhcpc, stage reports) against `oneroot serve` and dnsmasq + nginx,
and that the bench cleans up its namespaces."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from oneroot.testing import netns

BENCH = Path(__file__).resolve().parents[2] / "bench" / "storm" / "bench_storm.py"

pytestmark = pytest.mark.skipif(not netns.available(), reason="needs root and ip")


def _namespaces(pid: int) -> set[str]:
    """The named namespaces of the bench run with process id `pid` (`storm-<kind>-<pid>`):
    other runs on the machine have their own, which come and go meanwhile."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines()
            if line.startswith("storm-") and line.split()[0].endswith(f"-{pid}")}


def test_storm_harness_boots_five_nodes_on_both_servers() -> None:
    bench = subprocess.Popen([sys.executable, str(BENCH), "--nodes", "5", "--payload", "random",
                              "--spread", "0.2", "--no-write"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # ~20 s alone; generous for a loaded machine: the test checks what the nodes did,
        # not how fast.
        stdout, stderr = bench.communicate(timeout=600)
    finally:
        if bench.returncode is None:
            bench.kill()
            bench.communicate()
    assert bench.returncode == 0, stderr[-3000:]
    rows = [json.loads(line) for line in stdout.splitlines()
            if line.startswith('{"server"')]
    assert [row["server"] for row in rows] == ["oneroot", "baseline"]
    for row in rows:
        assert (row["ok"], row["failed"], row["errors"]) == (5, 0, []), row
        assert row["report_failures"] == 0, row
        assert row["server_cpu_s"] > 0 and row["server_peak_rss_mb"] > 0, row
        assert set(row["stage_p50_s"]) == {"dhcp_pxe", "tftp", "dhcp_ipxe", "files",
                                           "dhcp_initramfs", "reports"}
    assert _namespaces(bench.pid) == set()  # the bench deleted its own
