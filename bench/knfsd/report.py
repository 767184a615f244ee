"""bench/knfsd's figures: the summary (medians and ratios) computed from the raw rows of one
run, and the results file written from them. Pure (a results dict in, a dict or text out), so
tests/unit/bench/test_knfsd_report.py runs it without QEMU.

Raw rows, as bench_knfsd.py records them:
  boots  {"mode", "node", "run", "target_s", "uptime_s", "load_1m_before", "load_1m_after"}
  fs     {"mode", "run", "where": plain|union, "pass": cold|cold2|warm, "find_ms", "find_n",
          "cat500_ms", "find_fuse_cpu_ms", "find_rpcs"}  (probe values: strings)
A mode's ratio pairs its union pass with the plain-NFS pass of the same boot and pass name
(the node mounts the plain export itself, just before), so load drift between boots cancels.
"""

from __future__ import annotations

import statistics
from typing import Any

MODES = ("client", "server")
ROOTS = {"client": "fuse-overlayfs over NFS (the seed's `…;node01;rw`)",
         "server": "1 NFS mount of the server's overlayfs (`union=server`)"}
# union-modes.json (nfs-ganesha) names the client mode by its top: fuse.
GANESHA_MODES = {"client": "fuse", "server": "server"}


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def _pairs(fs: list[dict[str, Any]], mode: str, cold: bool) -> list[tuple[float, float]]:
    """(union find_ms, plain find_ms) of each boot and pass of `mode`."""
    def wanted(row: dict[str, Any]) -> bool:
        return row["mode"] == mode and str(row["pass"]).startswith("cold") == cold

    plain = {(r.get("run"), r["pass"]): float(r["find_ms"]) for r in fs
             if wanted(r) and r["where"] == "plain"}
    return [(float(r["find_ms"]), plain[(r.get("run"), r["pass"])]) for r in fs
            if wanted(r) and r["where"] == "union" and (r.get("run"), r["pass"]) in plain]


def find_figures(fs: list[dict[str, Any]], mode: str, *, cold: bool = True) -> dict[str, Any]:
    """Medians of the union and plain `find /usr` (ms) and of their per-boot ratio."""
    pairs = _pairs(fs, mode, cold)
    entries = sorted({(r["where"], int(r["find_n"])) for r in fs if r["mode"] == mode})
    return {"union_ms": _median([u for u, _ in pairs]),
            "plain_ms": _median([p for _, p in pairs]),
            "ratio": _median([u / p for u, p in pairs if p > 0]),
            "pairs": len(pairs),
            "entries": {where: n for where, n in entries}}


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Per mode: power-on to target (median, samples) and the find figures, cold and warm;
    the server/client ratio of power-on to target."""
    boots = results["boots"]
    out: dict[str, Any] = {}
    for mode in MODES:
        targets = [float(b["target_s"]) for b in boots if b["mode"] == mode]
        uptimes = [float(b["uptime_s"]) for b in boots if b["mode"] == mode]
        out[mode] = {"target_s": _median(targets), "target_samples": sorted(targets),
                     "uptime_s": _median(uptimes),
                     "cold": find_figures(results["fs"], mode, cold=True),
                     "warm": find_figures(results["fs"], mode, cold=False)}
    client, server = out["client"]["target_s"], out["server"]["target_s"]
    out["target_server_over_client"] = (round(server / client, 2)
                                         if client and server else None)
    return out


def merge_modes(previous: dict[str, Any], new: dict[str, Any],
                modes: list[str]) -> dict[str, Any]:
    """A run of some modes into the results of an earlier run: the other modes keep their
    rows and say which run made them (`modes_run`)."""
    kept = {mode: run for mode, run in previous.get("modes_run", {}).items()
            if mode not in modes}
    return {**new, "modes_run": {**kept, **new["modes_run"]},
            "boots": [b for b in previous["boots"] if b["mode"] in kept] + new["boots"],
            "fs": [r for r in previous["fs"] if r["mode"] in kept] + new["fs"]}


def ganesha_reference(modes_results: dict[str, Any], source: str) -> dict[str, Any]:
    """The same figures from bench/results/union-modes.json (nfs-ganesha, another run and
    image): copied into knfsd.json so every figure the results file cites is in it."""
    fs = [{**r, "mode": mode} for r in modes_results.get("fs", [])
          for mode, theirs in GANESHA_MODES.items() if r["mode"] == theirs]
    boots = modes_results.get("boot", [])
    out: dict[str, Any] = {"source": source, "host": modes_results.get("host"),
                           "runs": modes_results.get("runs")}
    for mode, theirs in GANESHA_MODES.items():
        targets = [float(b["target_s"]) for b in boots if b["mode"] == theirs]
        out[mode] = {"target_s": _median(targets), "cold": find_figures(fs, mode)}
    return out


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if unit == "ms" else f"{value:g}"


def _load(average: list[float]) -> str:
    return " ".join(f"{x:.2f}" for x in average)


def _loads(results: dict[str, Any]) -> str:
    loads = [b[k] for b in results["boots"] for k in ("load_1m_before", "load_1m_after")
             if b.get(k) is not None]
    if not loads:
        return "not recorded"
    return f"{min(loads):g}–{max(loads):g}"


def render_markdown(results: dict[str, Any]) -> str:
    """The results file: provenance, the ratios, then every raw row."""
    s = results["summary"]
    machine = results["machine"]
    vm = results["server_vm"]
    lines = [
        "# knfsd: power-on to target and cold `find /usr`, client vs server union mode "
        "(QEMU TCG)", "",
        *_produced_by(results), "",
        f"Machine: host {results['host']}, kernel {results['kernel']}, {machine['cpus']} CPUs "
        f"({machine['cpu_model']}), load average {_load(machine['load_average'])} at the "
        "start; "
        f"1-min load around the node boots {_loads(results)}.",
        "Versions: " + "; ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".",
        f"Server VM: {vm['memory_mib']} MiB, {vm['cpus']} vCPUs, kernel {vm['kernel']}, "
        f"nfs-kernel-server {vm['nfs_kernel_server']}; nodes {results['node_memory_mib']} MiB, "
        "1 vCPU, booted one at a time.", "",
        "Setup (`oneroot.ops.labserver.VmServerLab`, what `oneroot lab up --server vm` runs):",
        "the server VM's own `/` is image `default`, exported as the masked view (NFSv4 root, "
        "all_squash); node01 boots the seed's `10.0.0.1:/:ro;10.0.0.1:/var/state/systems/"
        "node01;rw` (client mode); node02 is `union=server` on image `rootcopy`, the server "
        "VM's own disk attached a second time (read-only, at "
        f"`{results['rootcopy']}`): oneroot refuses a server-side union over the live `/`, "
        "so the copy gives the server mode the same `/usr` tree.",
        "Plain NFS: each node mounts `10.0.0.1:/` (the view of the same tree, NFSv4.2, "
        "read-only) itself and runs the same `find /usr | wc -l` there, in the same boot, "
        "before each union pass. `cold*` passes: `echo 3 > /proc/sys/vm/drop_caches` on the "
        "node first; the server's caches are warm (a `find` over both trees before the boots). "
        "Ratio = union / plain per pass, median over passes.", "",
        "## Ratios", "",
        "| mode | root | power-on to target (s) | cold find union (ms) | cold find plain "
        "NFS (ms) | **cold ratio** | passes | entries union / plain |",
        "|---|---|---:|---:|---:|---:|---:|---|"]
    for mode in MODES:
        m = s[mode]
        entries = m["cold"]["entries"]
        lines.append(f"| {mode} | {ROOTS[mode]} | {_fmt(m['target_s'])} | "
                     f"{_fmt(m['cold']['union_ms'], 'ms')} | {_fmt(m['cold']['plain_ms'], 'ms')} "
                     f"| **{_fmt(m['cold']['ratio'])}** | {m['cold']['pairs']} | "
                     f"{entries.get('union', '-')} / {entries.get('plain', '-')} |")
    across = "" if one_run(results) else ", from the two runs"
    lines += ["", f"Power-on to target, server mode / client mode: "
              f"{_fmt(s['target_server_over_client'])} (samples: client "
              f"{s['client']['target_samples']}, server {s['server']['target_samples']} s"
              f"{across}).", ""]
    lines += _ganesha_lines(results.get("ganesha"), s)
    lines += _raw_lines(results)
    return "\n".join(lines) + "\n"


def one_run(results: dict[str, Any]) -> bool:
    """Whether every mode's rows come from the same run."""
    runs = results.get("modes_run", {})
    return len({(r["command"], r["started"]) for r in runs.values()}) <= 1


def _produced_by(results: dict[str, Any]) -> list[str]:
    runs = results.get("modes_run", {})
    if one_run(results):
        return [f"Produced by `{results['command']}`, started {results.get('started')}: one "
                "run; every figure below is in knfsd.json."]
    return ["Produced by one run per mode (each under the 15 minutes a QEMU lock may be held); "
            "each ratio pairs passes of one boot. Every figure below is in knfsd.json.", "",
            *(f"- {mode}: `{run['command']}`, started {run['started']}, host load average "
              f"{_load(run['load_average'])} at its start" for mode, run in sorted(runs.items()))]


def _ganesha_lines(g: dict[str, Any] | None, s: dict[str, Any]) -> list[str]:
    if not g:
        return []
    lines = ["## Beside nfs-ganesha", "",
             f"From `{g['source']}` (another run, {g['runs']} boot(s) per mode, the lab image "
             "in the lab's namespace, ganesha over NFSv4.2; its figures are copied into "
             "knfsd.json). The images differ, so compare ratios, not times.", "",
             "| mode | knfsd cold ratio | ganesha cold ratio | ganesha cold find union / plain "
             "(ms) | ganesha power-on to target (s) |", "|---|---:|---:|---|---:|"]
    for mode in MODES:
        theirs = g[mode]
        lines.append(f"| {mode} | {_fmt(s[mode]['cold']['ratio'])} | "
                     f"{_fmt(theirs['cold']['ratio'])} | {_fmt(theirs['cold']['union_ms'], 'ms')}"
                     f" / {_fmt(theirs['cold']['plain_ms'], 'ms')} | "
                     f"{_fmt(theirs['target_s'])} |")
    return [*lines, ""]


def _raw_lines(results: dict[str, Any]) -> list[str]:
    lines = ["## Every boot", "",
             "Settled: the kernel uptime when the probe stopped waiting for the boot's other "
             "jobs (at most 20 tries), and the jobs still pending then.", "",
             "| mode | node | run | power-on to target (s) | kernel uptime at target (s) | "
             "settled (s) | pending then | host load 1 min before / after |",
             "|---|---|---:|---:|---:|---:|---|---|"]
    for b in results["boots"]:
        lines.append(f"| {b['mode']} | {b['node']} | {b['run']} | {b['target_s']} | "
                     f"{b['uptime_s']} | {b.get('settled', '-')} | {b.get('busy', '-')} | "
                     f"{b.get('load_1m_before')} / {b.get('load_1m_after')} |")
    lines += ["", "## Every `find /usr` (ms)", "",
              "NFS RPCs during the find: operation:count:execute-ms from /proc/self/mountstats, "
              "per mount (plain: its own mount's superblock; union: every NFS superblock once); "
              "fuse CPU: the fuse-overlayfs daemon's user+system time during the find (ms). "
              "(bench_union's `cat` of 500 files is not run here: `CAT500=0`.)", "",
              "| mode | run | pass | where | find /usr | entries | fuse CPU | "
              "NFS RPCs during find |", "|---|---:|---|---|---:|---:|---:|---|"]
    for r in results["fs"]:
        lines.append(f"| {r['mode']} | {r.get('run')} | {r['pass']} | {r['where']} | "
                     f"{r['find_ms']} | {r['find_n']} | "
                     f"{r.get('find_fuse_cpu_ms', '')} | "
                     f"{str(r.get('find_rpcs', '')).replace(',', ', ')} |")
    return [*lines, ""]
