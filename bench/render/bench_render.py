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

from oneroot.model.cluster import Group, Image, InitSystem, Node, Runlevel, Settings
from oneroot.model.inventory import Inventory
from oneroot.net import MacAddress
from oneroot.ops.catalog import BootCatalog
from oneroot.ops.rendertree import render_tree

RESULTS = Path(__file__).resolve().parents[1] / "results"


def inventory(count: int) -> Inventory:
    settings = Settings(subnet=ipaddress.IPv4Network("10.0.0.0/16"))
    nodes = {}
    for i in range(count):
        name = f"node{i + 1:05d}"
        mac = MacAddress(bytes([0x52, 0x54, 0, 0, (i >> 8) & 0xFF, i & 0xFF]))
        nodes[name] = Node(name=name, macs=(mac,),
                           address=ipaddress.IPv4Address(int(settings.server_address) + 10 + i),
                           groups=("default", "compute") if i % 2 else ("default",))
    return Inventory(
        settings=settings, nodes=nodes,
        groups={"default": Group(name="default"),
                "compute": Group(name="compute", values={"runlevel": "computenode"})},
        images={"default": Image(name="default", root=settings.image_root,
                                 init_system=InitSystem.SYSTEMD)},
        runlevels={"computenode": Runlevel(name="computenode")})


def timed(inv: Inventory, out: Path) -> tuple[float, int, int]:
    start = time.perf_counter()
    report = render_tree(BootCatalog(inv), out / "boot", out / "config")
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
