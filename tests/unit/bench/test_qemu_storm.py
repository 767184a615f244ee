"""bench/storm's QEMU storm figures: what a node's console says (runlevel, failure, retries),
one storm's summary (a failed node leaves the storm without a last node), the results file
keeping other node counts' runs, and the /proc parsing its CPU figures stand on."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

STORM = Path(__file__).resolve().parents[3] / "bench" / "storm"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_storm_{name}", STORM / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_storm_{name}"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report() -> ModuleType:
    return _load("qemu_report")


@pytest.fixture(scope="module")
def servers() -> ModuleType:
    sys.modules["netns"] = _load("netns")  # servers.py imports its neighbour by that name
    try:
        return _load("servers")
    finally:
        del sys.modules["netns"]


BOOTING = "iPXE 1.21\nLinux version 6.1\n[  OK  ] Reached target basic.target\n"


def test_console_state(report: ModuleType) -> None:
    assert report.console_state(BOOTING) is None
    reached = BOOTING + "PROBE runlevel=reached uptime=31.52\n"
    assert report.console_state(reached) == ("ok", "31.52")
    panic = BOOTING + "Kernel panic - not syncing: VFS: Unable to mount root fs\n"
    assert report.console_state(panic) == ("failed", "Kernel panic - not syncing")
    assert report.console_state("No bootable device.\n") == ("failed", "No bootable device")


def test_retries_count_ipxe_and_initramfs_lines(report: ModuleType) -> None:
    text = ("oneroot: could not boot node01 from http://10.0.0.1:8080/boot (the error is above)\n"
            "oneroot: nfs mount failed (try 1 of 5): timed out; again in 1s\n"
            "oneroot: nfs mount failed (try 2 of 5): timed out; again in 2s\n")
    assert report.retries(text) == {"ipxe": 1, "initramfs": 2}
    assert report.retries(BOOTING) == {"ipxe": 0, "initramfs": 0}


def _node(name: str, runlevel: float, at: float, uptime: float, **retries: int
          ) -> dict[str, Any]:
    return {"node": name, "ok": True, "runlevel_s": runlevel, "at_s": at, "uptime_s": uptime,
            "boot_files_s": round(runlevel - uptime, 1),
            "retries": {"ipxe": 0, "initramfs": 0, **retries}}


def test_summary_median_and_last_node(report: ModuleType) -> None:
    nodes = [_node("node01", 60.0, 60.1, 50.0), _node("node02", 80.0, 80.3, 66.0),
             _node("node03", 70.0, 70.2, 61.0, initramfs=1), _node("node04", 90.0, 90.5, 77.0)]
    s = report.summarize(nodes)
    assert (s["ok"], s["failed"], s["median_s"], s["first_s"], s["last_s"]) == \
        (4, 0, 75.0, 60.1, 90.5)
    assert s["boot_files_median_s"] == 11.5
    assert s["retries"] == 1


def test_a_failed_node_means_no_last_node(report: ModuleType) -> None:
    failed = {"node": "node02", "ok": False, "error": "no runlevel within 420 s",
              "retries": {"ipxe": 3, "initramfs": 0}}
    s = report.summarize([_node("node01", 60.0, 60.1, 50.0), failed])
    assert (s["ok"], s["failed"], s["last_s"], s["median_s"]) == (1, 1, None, 60.0)
    assert s["retries"] == 3


def test_a_run_replaces_the_run_of_its_node_count_only(report: ModuleType) -> None:
    old = [{"nodes": 4, "date": "a"}, {"nodes": 6, "date": "b"}]
    assert report.merge_runs(old, {"nodes": 6, "date": "c"}) == \
        [{"nodes": 4, "date": "a"}, {"nodes": 6, "date": "c"}]


def _storm(server: str, nodes: list[dict[str, Any]], cpu: float, nfs: float
           ) -> dict[str, Any]:
    return {"server": server, "load_at_start": [3.5, 4.0, 4.1],
            "mem_available_gb_at_start": 19.2, "power_on_spread_s": 0.4,
            "server_cpu_s": cpu, "nfs_cpu_s": nfs, "boot_services_cpu_s": round(cpu - nfs, 1),
            "qemu_cpu_s": 400.0, "qemu_peak_rss_gb": 2.1, "same_script": True,
            "nodes": nodes, "summary": {}}


def test_markdown_holds_the_json_figures_and_the_ratios(report: ModuleType,
                                                        tmp_path: Path) -> None:
    one = _storm("oneroot", [_node("node01", 60.0, 60.1, 50.0),
                             _node("node02", 80.0, 80.3, 66.0)], 30.0, 20.0)
    base = _storm("baseline", [_node("node01", 50.0, 50.1, 40.0),
                               _node("node02", 70.0, 70.2, 56.0)], 25.0, 20.0)
    for storm in (one, base):
        storm["summary"] = report.summarize(storm["nodes"])
    run = {"nodes": 2, "command": "bench/storm/qemu_storm.py --nodes 2",
           "date": "2026-12-07 18:30 UTC",
           "machine": {"kernel": "6.1", "cpus": 2, "cpu_model": "x", "memory_gb": 25.2,
                       "load_average": [3.5, 4.0, 4.1]},
           "versions": {"qemu": "QEMU emulator version 7.2"}, "storms": [one, base]}
    out = tmp_path / "storm-qemu.md"
    report.write_markdown({"runs": [run]}, out, "## Reading\n\nby hand\n")
    text = out.read_text()
    assert "| oneroot serve | 2 / 2 | 70.0 | 80.3 | 12.0 |" in text
    assert "| dnsmasq + nginx | 2 / 2 | 60.0 | 70.2 | 12.0 |" in text
    assert "median node 1.17×, last node 1.14×, boot files 1.00×" in text
    assert "server CPU 1.20×, DHCP/TFTP/HTTP CPU 2.00×" in text
    assert text.rstrip().endswith("by hand")


def test_proc_stat_with_spaces_and_parens_in_the_name(servers: ModuleType) -> None:
    stat = ("4242 (ganesha (nfs) d) S 17 4242 4242 0 -1 4194560 1 0 0 0 "
            "123 45 6 7 20 0 9 0 100 0 0")
    assert servers.parse_stat(stat) == ("ganesha (nfs) d", 17, 168)


def test_descendants_parents_first(servers: ModuleType) -> None:
    parents = {1: 0, 10: 1, 11: 10, 12: 10, 13: 11, 20: 1, 21: 20}
    assert servers.descendants(parents, 10) == [10, 11, 12, 13]
    assert servers.descendants(parents, 99) == [99]
