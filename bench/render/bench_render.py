"""Render benchmark: a 5,000-node inventory rendered cold, then again with nothing changed,
then after one node changed, each time by `oneroot render` as a user runs it (the CLI, its
start-up included), on an inventory made by `oneroot init`, `runlevel add`, `group add` and
`node add`.

    .venv/bin/python bench/render/bench_render.py [--nodes 5000]

Writes bench/results/render.md and render.json. The point: a one-node change must not
re-render the others.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
ONEROOT = str(Path(sys.executable).parent / "oneroot")


def oneroot(home: Path, *args: str) -> str:
    return subprocess.run([ONEROOT, "--home", str(home), *args], check=True, text=True,
                          capture_output=True, timeout=1800).stdout


def make_inventory(work: Path, count: int) -> Path:
    """Half the nodes in group `compute` (runlevel computenode), half in `default` only."""
    home = work / "home"
    oneroot(home, "init", "--server", "10.0.0.1", "--subnet", "10.0.0.0/16", "--interface",
            "eth1", "--boot-dir", str(work / "boot"), "--state-dir", str(work / "state"),
            "--image-root", str(work / "image"))
    oneroot(home, "runlevel", "add", "computenode")
    oneroot(home, "group", "add", "compute", "--set", "runlevel=computenode")
    macs = work / "macs.txt"
    macs.write_text("".join(f"52:54:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}\n"
                            for i in range(1, count + 1)))
    half = count // 2
    lines = macs.read_text().splitlines(keepends=True)
    (work / "macs-a.txt").write_text("".join(lines[:half]))
    (work / "macs-b.txt").write_text("".join(lines[half:]))
    width = len(str(count))
    oneroot(home, "node", "add", f"node[{1:0{width}d}-{half:0{width}d}]", "--macs-file",
            str(work / "macs-a.txt"), "--ip", "10.0.1.1")
    second = str(ipaddress.IPv4Address("10.0.1.1") + half)
    oneroot(home, "node", "add", f"node[{half + 1:0{width}d}-{count:0{width}d}]",
            "--macs-file", str(work / "macs-b.txt"), "--ip", second, "--group", "compute")
    return home


def timed_render(home: Path) -> dict[str, object]:
    started = time.perf_counter()
    out = oneroot(home, "render")
    seconds = time.perf_counter() - started
    match = re.search(r"(\d+) written, (\d+) unchanged, (\d+) removed", out)
    if match is None:
        raise RuntimeError(f"unexpected `oneroot render` output: {out[-500:]}")
    return {"seconds": round(seconds, 2), "written": int(match.group(1)),
            "unchanged": int(match.group(2)), "removed": int(match.group(3))}


def provenance(command: str, load_before: tuple[float, ...]) -> dict[str, object]:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    return {"command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "versions": {"oneroot": f"{version('oneroot')} at {commit}",
                         "python": platform.python_version()},
            "machine": {"kernel": platform.release(), "cpus": os.cpu_count(),
                        "cpu_model": model},
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=5000)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        work = Path(tmp)
        home = make_inventory(work, args.nodes)
        cold = timed_render(home)
        same = timed_render(home)
        first = f"node{42:0{len(str(args.nodes))}d}"
        oneroot(home, "node", "set", first, "--set", "kernel_args=quiet")
        one = timed_render(home)
    rows = [{"run": "cold (every file)", **cold}, {"run": "nothing changed", **same},
            {"run": f"one node changed ({first})", **one}]
    command = f".venv/bin/python bench/render/bench_render.py --nodes {args.nodes}"
    report = {**provenance(command, load_before), "nodes": args.nodes, "rows": rows}
    machine: dict[str, object] = report["machine"]  # type: ignore[assignment]
    lines = [f"# render benchmark: `oneroot render` of {args.nodes} nodes", "",
             f"Produced by `{command}` on {report['date']}; every figure is in render.json.",
             f"Machine: kernel {machine['kernel']}, {machine['cpus']} CPUs "
             f"({machine['cpu_model']}), shared: load average {report['load_average_before']} "
             f"before, {report['load_average_after']} after.",
             "Versions: " + "; ".join(f"{k} {v}" for k, v in report["versions"].items())  # type: ignore[attr-defined]
             + ".",
             "Each row is one `oneroot --home H render` (the CLI as a user runs it, Python "
             "start-up included) on an inventory made by `oneroot init` and `oneroot node add` "
             "(half the nodes in a group with a runlevel).", "",
             "| run | seconds | files written | unchanged | removed |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['run']} | {r['seconds']} | {r['written']} | {r['unchanged']} | "
              f"{r['removed']} |" for r in rows]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "render.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "render.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
