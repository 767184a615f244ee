"""bench/results/storm.md and storm.json from one run of bench_storm.py: every figure in the
Markdown comes from the JSON written next to it."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def _fmt(value: object) -> str:
    return "–" if value is None else str(value)


def write_results(report: dict[str, object], out: Path) -> None:
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    rows: list[dict[str, object]] = report["rows"]  # type: ignore[assignment]
    machine: dict[str, object] = report["machine"]  # type: ignore[assignment]
    versions: dict[str, str] = report["versions"]  # type: ignore[assignment]
    lines = [
        "# Boot storm: N simulated PXE nodes against oneroot serve and dnsmasq + nginx",
        "",
        f"Produced by `.venv/bin/python {report['command']}` on {report['date']}; every "
        f"figure below is in `{out.with_suffix('.json').name}` next to this file.",
        f"Machine: kernel {machine['kernel']}, {machine['cpus']} CPUs ({machine['cpu_model']}), "
        f"{machine['memory_gb']} GB, shared with other jobs: load average "
        f"{report['load_average_before']} before, {report['load_average_after']} after.",
        "Versions: " + "; ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        f"oneroot: `{' '.join(report['oneroot_argv'])}` "  # type: ignore[arg-type]
        "(after `oneroot init`, `oneroot node add`, `oneroot render`), as the README starts it.",
        "Baseline: dnsmasq with the dnsmasq.conf `oneroot render` wrote (DHCP + TFTP), nginx "
        "serving the same boot dir (HTTP), both in the same run.",
        f"Nodes: {report['arch']} PXE ROM → TFTP loader (blksize 1432, window 1) → iPXE DHCP → "
        "script, kernel, initramfs over HTTP → udhcpc DHCP → 6 stage reports (each tried up to 3 "
        "times until answered); power-on spread "
        f"over {report['spread_s']} s. Boot files: {report['payload']}.",
        "Each node is its own network namespace with its own MAC on one bridge "
        "(bench/storm/netns.py); the load generator and the bridge share the 2 CPUs with the "
        "server.",
        "",
        "| server | nodes | pair | ok | failed | all files (s) | per-node p50 (s) "
        "| per-node p99 (s) | retries | report failures | server CPU (s) | server peak RSS (MB) "
        "| load gen CPU (s) | load before | load after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        retries = ", ".join(f"{k} {v}" for k, v in sorted(row["retries"].items()))  # type: ignore[attr-defined]
        lines.append(
            f"| {row['server']} | {row['nodes']} | {row.get('rep', 0)} | {row['ok']} "
            f"| {row['failed']} "
            f"| {_fmt(row['all_files_s'])} | {_fmt(row['files_p50_s'])} "
            f"| {_fmt(row['files_p99_s'])} | {retries or 'none'} | {row['report_failures']} "
            f"| {row['server_cpu_s']} | {row['server_peak_rss_mb']} | {row['loadgen_cpu_s']} "
            f"| {row.get('load_before', '–')} | {row.get('load_after')} |")
    lines += _ratios(rows, report.get("variants", {}))  # type: ignore[arg-type]
    lines += ["", "Per-stage medians (seconds after the node's power-on, when it had finished "
              "the stage):", "",
              "| server | nodes | DHCP (ROM) | TFTP | DHCP (iPXE) | HTTP files | DHCP "
              "(initramfs) | reports |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        p50: dict[str, float] = row["stage_p50_s"]  # type: ignore[assignment]
        lines.append(f"| {row['server']} | {row['nodes']} | " + " | ".join(
            _fmt(p50.get(s)) for s in ("dhcp_pxe", "tftp", "dhcp_ipxe", "files",
                                       "dhcp_initramfs", "reports")) + " |")
    failed = [row for row in rows if row["errors"]]
    if failed:
        lines += ["", "Errors (first ones):", ""]
        lines += [f"- {row['server']} N={row['nodes']}: {'; '.join(row['errors'])}"  # type: ignore[arg-type]
                  for row in failed]
    lines += ["", "Server CPU by process (seconds during the storm; a process that was "
              "replaced counts from its start):", "", "| server | nodes | pair | by process |",
              "|---|---:|---:|---|"]
    lines += [f"| {row['server']} | {row['nodes']} | {row.get('rep', 0)} | " + ", ".join(
        f"{kind} {seconds}" for kind, seconds in sorted(
            row.get("server_cpu_by_process_s", {}).items())) + " |"  # type: ignore[attr-defined]
        for row in rows]
    lines += _drops(rows) + _profiles(rows)
    lines += ["", "\"all files\": from the first power-on until the last node has its "
              "script, kernel and initramfs. Per-node: from its own power-on to the same point. "
              "Server CPU: its cgroup (every process). Peak RSS: the largest sum of the server "
              "processes' VmRSS sampled every 100 ms.", ""]
    out.with_suffix(".md").write_text("\n".join(lines))


RATIO_KEYS = ("all_files_s", "files_p50_s", "files_p99_s")


def _ratio(mine: object, other: object) -> float | None:
    if mine is None or not other:
        return None
    return float(mine) / float(other)  # type: ignore[arg-type]


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _ratios(rows: list[dict[str, object]], variants: dict[str, list[str]]) -> list[str]:
    """Each oneroot row over the baseline row of the same N and pair (same run, one after
    the other): below 1 is faster. With several pairs, the median of the pairs' ratios."""
    base = {(row["nodes"], row.get("rep", 0)): row for row in rows
            if row["server"] == "baseline"}
    lines = ["", "oneroot / baseline, same N, same pair of storms (below 1: oneroot finished "
             "first):", "",
             "| server | nodes | pair | all files | per-node p50 | per-node p99 | failed "
             "(oneroot ; baseline) |", "|---|---:|---:|---:|---:|---:|---|"]
    paired: dict[tuple[object, object], list[list[float | None]]] = {}
    for row in rows:
        theirs = base.get((row["nodes"], row.get("rep", 0)))
        if row["server"] == "baseline" or theirs is None:
            continue
        ratios = [_ratio(row[key], theirs[key]) for key in RATIO_KEYS]
        paired.setdefault((row["server"], row["nodes"]), []).append(ratios)
        lines.append(f"| {row['server']} | {row['nodes']} | {row.get('rep', 0)} | "
                     + " | ".join(map(_cell, ratios))
                     + f" | {row['failed']} ; {theirs['failed']} |")
    if any(len(pairs) > 1 for pairs in paired.values()):
        lines += ["", "Median over the pairs:", "",
                  "| server | nodes | pairs | all files | per-node p50 | per-node p99 |",
                  "|---|---:|---:|---:|---:|---:|"]
        for (server, nodes), pairs in paired.items():
            medians = [_median([p[i] for p in pairs]) for i in range(len(RATIO_KEYS))]
            lines.append(f"| {server} | {nodes} | {len(pairs)} | "
                         + " | ".join(map(_cell, medians)) + " |")
    lines += [f"- {name}: `oneroot serve` with `{' '.join(extra)}`" for name, extra in
              variants.items()]
    return lines


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _drops(rows: list[dict[str, object]]) -> list[str]:
    lines = ["", "Packets dropped during each storm (kernel counters; bench/storm/netns.py):", "",
             "| server | nodes | server UDP receive buffer | server TCP listen queue "
             "| server link (tx) | switch uplink (rx) | per-CPU backlogs (machine) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        d: dict[str, int] = row.get("drops", {})  # type: ignore[assignment]
        lines.append(f"| {row['server']} | {row['nodes']} | {d.get('server_udp_rcvbuf_errors')} "
                     f"| {d.get('server_listen_overflows', '–')} "
                     f"| {d.get('server_eth0_tx_drop')} | {d.get('uplink_rx_drop')} "
                     f"| {d.get('softnet_dropped')} |")
    return lines


def _profiles(rows: list[dict[str, object]]) -> list[str]:
    """Where `oneroot serve` spent the storm (py-spy, --profile): shares of the samples."""
    lines: list[str] = []
    for row in rows:
        profile: dict[str, object] | None = row.get("profile")  # type: ignore[assignment]
        if not profile:
            continue
        everything: list[tuple[str, float]] = profile["inclusive"]  # type: ignore[assignment]
        top = max((share for _, share in everything), default=0.0)
        # below the frames every sample of the main thread holds (click, asyncio.run, ...)
        inclusive = [(name, share) for name, share in everything if share < 0.99 * top]
        lines += ["", f"Where oneroot serve ({row['server']}) spent N={row['nodes']} (py-spy, "
                  f"{profile['samples']} samples at 100 Hz; share of samples):", "",
                  "| innermost function (self) | share | function anywhere on the stack | share |",
                  "|---|---:|---|---:|"]
        own: list[tuple[str, float]] = profile["self"]  # type: ignore[assignment]
        for i in range(max(len(own[:12]), len(inclusive[:12]))):
            a = own[i] if i < len(own[:12]) else ("", "")
            b = inclusive[i] if i < len(inclusive[:12]) else ("", "")
            lines.append(f"| {a[0]} | {a[1]} | {b[0]} | {b[1]} |")
    return lines
