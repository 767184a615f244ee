"""Render benchmark: a 5,000-node inventory rendered cold, then again after one node changed.

    .venv/bin/python bench/render/bench_render.py [--nodes 5000]

Writes bench/results/render.md. The point: a one-node change must not re-render the others.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import tempfile
import time
from pathlib import Path

from oneroot.model.cluster import Group, InitSystem, Runlevel, Settings
from oneroot.model.inventory import Inventory
from oneroot.model.resolved import resolve_cluster
from oneroot.ops.catalog import BootCatalog
from oneroot.ops.rendertree import render_tree
from oneroot.testing.inventory import make_inventory, make_node

RESULTS = Path(__file__).resolve().parents[1] / "results"


def inventory(count: int) -> Inventory:
    nodes = [make_node(i, name=f"node{i:05d}",
                       groups=("default", "compute") if i % 2 == 0 else ("default",))
             for i in range(1, count + 1)]
    return make_inventory(
        nodes=nodes, groups=[Group(name="compute", values={"runlevel": "computenode"})],
        settings=Settings(subnet=ipaddress.IPv4Network("10.0.0.0/16")),
        init_system=InitSystem.SYSTEMD, runlevels=[Runlevel(name="computenode")])


def timed(inv: Inventory, out: Path) -> tuple[float, int, int]:
    start = time.perf_counter()
    report = render_tree(BootCatalog(resolve_cluster(inv)), out / "boot", out / "config")
    return time.perf_counter() - start, report.rendered, len(report.written)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=5000)
    args = parser.parse_args()
    inv = inventory(args.nodes)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cold = timed(inv, out)
        same = timed(inv, out)
        name = "node00042"
        changed = inv.with_nodes([dataclasses.replace(
            inv.nodes[name], overrides={"kernel_args": ("quiet",)})])
        one = timed(changed, out)
    rows = [("cold (every file)", *cold), ("nothing changed", *same),
            ("one node changed", *one)]
    lines = [f"# render benchmark: {args.nodes} nodes (3 files each + 3 cluster configs)", "",
             "`.venv/bin/python bench/render/bench_render.py --nodes "
             f"{args.nodes}`", "",
             "| run | seconds | files rendered | files written |", "|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]:.2f} | {r[2]} | {r[3]} |" for r in rows]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "render.md").write_text(text)
    (RESULTS / "render.json").write_text(json.dumps(
        [{"run": r[0], "seconds": r[1], "rendered": r[2], "written": r[3]} for r in rows],
        indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
