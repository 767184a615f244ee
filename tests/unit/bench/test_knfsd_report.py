"""bench/knfsd's report: each mode's cold `find /usr` ratio pairs its union pass with the
plain-NFS pass of the same boot and pass (never another boot's), medians over the pairs; the
ganesha figures beside it come from union-modes.json's rows; every figure the results file
prints is in the summary that goes into knfsd.json."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

KNFSD = Path(__file__).resolve().parents[3] / "bench" / "knfsd"


@pytest.fixture(scope="module")
def report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("knfsd_report", KNFSD / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fs(mode: str, run: int, pss: str, where: str, ms: int, n: int = 17000) -> dict[str, Any]:
    return {"mode": mode, "run": run, "where": where, "pass": pss, "find_ms": str(ms),
            "find_n": str(n), "cat500_ms": "100", "find_fuse_cpu_ms": "0",
            "find_rpcs": "READDIR:10:5,GETATTR:3:1"}


def _boot(mode: str, run: int, target: float) -> dict[str, Any]:
    return {"mode": mode, "node": "node01" if mode == "client" else "node02", "run": run,
            "target_s": target, "uptime_s": target - 6, "load_1m_before": 2.5,
            "load_1m_after": 3.75}


def _results() -> dict[str, Any]:
    fs = [_fs("client", 1, "cold", "plain", 4000), _fs("client", 1, "cold", "union", 20000),
          _fs("client", 1, "cold2", "plain", 5000), _fs("client", 1, "cold2", "union", 15000),
          _fs("client", 1, "warm", "plain", 2000), _fs("client", 1, "warm", "union", 1000),
          _fs("server", 1, "cold", "plain", 4000), _fs("server", 1, "cold", "union", 3000),
          # a plain pass without its union pass (the probe died) pairs with nothing
          _fs("server", 1, "cold2", "plain", 100)]
    return {"command": "flock /tmp/oneroot-qemu.lock .venv/bin/python "
                       "bench/knfsd/bench_knfsd.py --runs 2",
            "started": "2026-12-07 14:00:00 UTC",
            "modes_run": {mode: {"command": "c", "started": "2026-12-07 14:00:00 UTC",
                                 "load_average": [1.0, 2.0, 3.0]} for mode in ("client",
                                                                               "server")},
            "host": "vm", "kernel": "6.1", "runs": 2, "rootcopy": "/srv/images/rootcopy",
            "machine": {"cpus": 2, "cpu_model": "x", "load_average": [1.0, 2.0, 3.0]},
            "versions": {"oneroot": "abc"}, "node_memory_mib": 768,
            "server_vm": {"kernel": "6.1.0", "nfs_kernel_server": "1:2.6.2",
                          "memory_mib": 1024, "cpus": 2},
            "boots": [_boot("client", 1, 60.0), _boot("server", 1, 40.0),
                      _boot("client", 2, 50.0), _boot("server", 2, 44.0)],
            "fs": fs}


def test_ratios_pair_passes_of_one_boot(report: ModuleType) -> None:
    s = report.summarize(_results())
    # client: 20000/4000 = 5 and 15000/5000 = 3, median 4 (not 35000/9000)
    assert s["client"]["cold"] == {"union_ms": 17500, "plain_ms": 4500, "ratio": 4,
                                   "pairs": 2, "entries": {"plain": 17000, "union": 17000}}
    assert s["client"]["warm"]["ratio"] == 0.5
    assert s["server"]["cold"]["ratio"] == 0.75 and s["server"]["cold"]["pairs"] == 1
    assert s["client"]["target_s"] == 55 and s["server"]["target_s"] == 42
    assert s["target_server_over_client"] == round(42 / 55, 2)


def test_ganesha_rows_come_from_union_modes(report: ModuleType) -> None:
    modes = {"host": "vm", "runs": 1,
             "boot": [{"mode": "server", "run": 1, "target_s": 24.1},
                      {"mode": "fuse", "run": 1, "target_s": 29.4},
                      {"mode": "tmpfs", "run": 1, "target_s": 25.5}],
             "fs": [{**_fs("server", 1, "cold", "union", 2662), "mode": "server"},
                    {**_fs("server", 1, "cold", "plain", 3093), "mode": "server"},
                    {**_fs("fuse", 1, "cold", "union", 13599), "mode": "fuse"},
                    {**_fs("fuse", 1, "cold", "plain", 3531), "mode": "fuse"},
                    {**_fs("tmpfs", 1, "cold", "union", 1), "mode": "tmpfs"}]}
    g = report.ganesha_reference(modes, "bench/results/union-modes.json")
    assert g["client"]["cold"]["ratio"] == round(13599 / 3531, 2)
    assert g["server"]["cold"]["ratio"] == round(2662 / 3093, 2)
    assert g["client"]["target_s"] == 29.4 and g["server"]["target_s"] == 24.1


def test_the_markdown_cites_only_figures_of_the_json(report: ModuleType) -> None:
    results = _results()
    results["summary"] = report.summarize(results)
    text = report.render_markdown(json.loads(json.dumps(results)))
    ratios = text.split("## Ratios", 1)[1].split("## Every boot", 1)[0]
    assert "| client | fuse-overlayfs" in ratios and "| **4** | 2 | 17000 / 17000 |" in ratios
    assert "| **0.75** | 1 |" in ratios
    assert "server mode / client mode: 0.76" in ratios
    assert "1-min load around the node boots 2.5–3.75" in text
    assert text.count("| client | 1 | cold | ") == 2  # every raw row is printed
    # every number in a cell of the ratio table is a figure of the summary
    figures: set[str] = set()

    def collect(value: object) -> None:
        if isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            figures.update({f"{value:g}", f"{value:.0f}"})

    collect(results["summary"])
    cells = [cell.strip().strip("*") for line in ratios.splitlines() if line.startswith("| ")
             for cell in line.strip("|").split("|")]
    numbers = [cell for cell in cells if re.fullmatch(r"[0-9.]+", cell)]
    assert numbers and set(numbers) <= figures


def test_a_run_of_one_mode_keeps_the_other_modes_rows(report: ModuleType) -> None:
    earlier = _results()
    later = {**_results(), "command": "later", "started": "2026-12-07 15:00:00 UTC",
             "modes_run": {"server": {"command": "later", "started": "2026-12-07 15:00:00 UTC",
                                      "load_average": [9.0, 9.0, 9.0]}},
             "boots": [_boot("server", 1, 99.0)],
             "fs": [_fs("server", 1, "cold", "plain", 1000),
                    _fs("server", 1, "cold", "union", 2000)]}
    merged = report.merge_modes(earlier, later, ["server"])
    assert [b["target_s"] for b in merged["boots"]] == [60.0, 50.0, 99.0]
    assert {r["mode"] for r in merged["fs"]} == {"client", "server"}
    assert len(merged["fs"]) == 6 + 2  # the earlier server rows are gone
    assert merged["modes_run"]["client"]["started"] == "2026-12-07 14:00:00 UTC"
    merged["summary"] = report.summarize(merged)
    assert merged["summary"]["server"]["cold"]["ratio"] == 2
    text = report.render_markdown(merged)
    assert "one run per mode" in text and "from the two runs" in text
    assert "- server: `later`, started 2026-12-07 15:00:00 UTC" in text
