"""The QEMU storm's figures (bench/storm/qemu_storm.py), pure: what a node's console says, one
storm's summary, and bench/results/storm-qemu.md from storm-qemu.json (every figure in the
Markdown is in the JSON).

    console_state(text)          -> ("ok", uptime) | ("failed", reason) | None (still booting)
    retries(text)                -> {"ipxe": n, "initramfs": n}
    summarize(nodes)             -> ok, failed, median and last node, boot files median
    merge_runs(previous, run)    -> the runs to keep (a new run replaces one of the same N)
    write_markdown(results, out)
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

RUNLEVEL_LINE = re.compile(r"PROBE runlevel=reached uptime=([0-9.]+)")
# Console lines after which the runlevel will not come (QemuVm.wait_for's, and the kernel's
# "VFS: Unable to mount root").
FAILURE_LINE = re.compile(r"No bootable device|Kernel panic - not syncing|"
                          r"VFS: Unable to mount root")
# iPXE's script retrying its boot (node.ipxe.j2), the initramfs retrying a step (oneroot_retry).
RETRY_LINES = {"ipxe": re.compile(r"oneroot: could not boot "),
               "initramfs": re.compile(r" failed \(try \d+ of \d+\)")}


def console_state(text: str) -> tuple[str, str] | None:
    """Whether a node's console shows its runlevel (with the kernel's uptime then), a
    failure, or neither yet."""
    reached = RUNLEVEL_LINE.search(text)
    if reached:
        return "ok", reached.group(1)
    failed = FAILURE_LINE.search(text)
    if failed:
        return "failed", failed.group(0)
    return None


def retries(text: str) -> dict[str, int]:
    return {what: len(regex.findall(text)) for what, regex in RETRY_LINES.items()}


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def summarize(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """One storm, from its per-node rows (`ok`, `runlevel_s` from that node's power-on,
    `at_s` from the storm's first power-on, `boot_files_s`, `retries`)."""
    ok = [n for n in nodes if n["ok"]]
    return {
        "nodes": len(nodes), "ok": len(ok), "failed": len(nodes) - len(ok),
        "median_s": _median([n["runlevel_s"] for n in ok]),
        "first_s": round(min(n["at_s"] for n in ok), 1) if ok else None,
        # the storm is over when the last node is up: a failed node means it never is
        "last_s": round(max(n["at_s"] for n in ok), 1) if ok and len(ok) == len(nodes) else None,
        "boot_files_median_s": _median([n["boot_files_s"] for n in ok]),
        "kernel_to_runlevel_median_s": _median([n["uptime_s"] for n in ok]),
        "retries": sum(sum(n["retries"].values()) for n in nodes),
    }


def merge_runs(previous: list[dict[str, Any]], run: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs a results file keeps: each earlier one of another node count, then `run`."""
    return [r for r in previous if r["nodes"] != run["nodes"]] + [run]


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a is not None and b else "–"


def _fmt(value: object) -> str:
    return "–" if value is None else str(value)


SERVER_NAMES = {"oneroot": "oneroot serve", "baseline": "dnsmasq + nginx"}


def _run_lines(run: dict[str, Any]) -> list[str]:
    machine = run["machine"]
    lines = [f"## {run['nodes']} nodes", "",
             f"Produced by `flock /tmp/oneroot-qemu.lock .venv/bin/python {run['command']}` "
             f"on {run['date']}.",
             f"Machine: kernel {machine['kernel']}, {machine['cpus']} CPUs "
             f"({machine['cpu_model']}), {machine['memory_gb']} GB; load average at the start "
             f"{[round(x, 2) for x in machine['load_average']]}.",
             "Versions: " + "; ".join(f"{k} {v}" for k, v in run["versions"].items()) + ".", "",
             "| server | ok / nodes | median node (s) | last node (s) | boot files, median (s) | "
             "kernel to runlevel, median (s) | retries | server CPU (s) | of it nfs-ganesha (s) | "
             "DHCP/TFTP/HTTP CPU (s) | QEMU CPU (s) | load at start | "
             "memory available at start (GB) | QEMU peak RSS (GB) | power-on spread (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for storm in run["storms"]:
        s = storm["summary"]
        lines.append(
            f"| {SERVER_NAMES.get(storm['server'], storm['server'])} | {s['ok']} / {s['nodes']} "
            f"| {_fmt(s['median_s'])} | {_fmt(s['last_s'])} | {_fmt(s['boot_files_median_s'])} "
            f"| {_fmt(s['kernel_to_runlevel_median_s'])} | {s['retries']} "
            f"| {storm['server_cpu_s']} | {storm['nfs_cpu_s']} | {storm['boot_services_cpu_s']} "
            f"| {storm['qemu_cpu_s']} | {storm['load_at_start']} "
            f"| {storm['mem_available_gb_at_start']} | {storm['qemu_peak_rss_gb']} "
            f"| {storm['power_on_spread_s']} |")
    by_server = {storm["server"]: storm for storm in run["storms"]}
    if {"oneroot", "baseline"} <= by_server.keys():
        one, base = by_server["oneroot"], by_server["baseline"]
        pairs = [(f"{what} node", one["summary"][key], base["summary"][key])
                 for what, key in (("median", "median_s"), ("last", "last_s"))]
        pairs.append(("boot files", one["summary"]["boot_files_median_s"],
                      base["summary"]["boot_files_median_s"]))
        pairs += [(what, one[key], base[key]) for what, key in
                  (("server CPU", "server_cpu_s"), ("DHCP/TFTP/HTTP CPU", "boot_services_cpu_s"))]
        lines += ["", "oneroot / baseline: "
                  + ", ".join(f"{what} {ratio(a, b)}" for what, a, b in pairs) + "."]
    lines += ["", "Per node: power-on to runlevel (s), and kernel uptime at runlevel (s):", "",
              "| server | node | ok | power-on to runlevel | at (from the first power-on) | "
              "kernel uptime | boot files | retries | error |",
              "|---|---|---|---:|---:|---:|---:|---|---|"]
    for storm in run["storms"]:
        for n in storm["nodes"]:
            tries = ", ".join(f"{k} {v}" for k, v in n["retries"].items() if v) or "0"
            lines.append(f"| {storm['server']} | {n['node']} | {'yes' if n['ok'] else 'NO'} | "
                         f"{_fmt(n.get('runlevel_s'))} | {_fmt(n.get('at_s'))} | "
                         f"{_fmt(n.get('uptime_s'))} | {_fmt(n.get('boot_files_s'))} | "
                         f"{tries} | {n.get('error') or ''} |")
    return [*lines, ""]


HEADER = """# QEMU boot storm: N real lab nodes against oneroot serve and dnsmasq + nginx

N lab nodes (QEMU TCG, -smp 1, 768 MiB each, in the lab namespace on one bridge) are powered
on at the same moment; each runs QEMU's iPXE ROM → DHCP → its iPXE script, kernel and
initramfs over HTTP → the initramfs's DHCP → the NFS union root (nfs-ganesha, rw NFS top
with fuse-overlayfs) → systemd → multi-user.target (the runlevel; the probe, ordered after
it, prints on the serial console and the host timestamps the line). First against
`oneroot serve` (DHCP, TFTP, HTTP, nfs-ganesha), as the README starts it; then, in the same
run, against dnsmasq (the dnsmasq.conf `oneroot render` writes: DHCP + TFTP) and nginx
(the boot tree `oneroot render` writes, over HTTP), with the same nfs-ganesha from
`oneroot serve --no-dhcp --no-tftp --no-http`. Every node's layer is reset before each storm.
QEMU's ROM is iPXE itself, so neither server is asked for a loader over TFTP: both serve the
iPXE script, kernel and initramfs over HTTP.

- power-on to runlevel: from that node's QEMU start; median over the nodes; the last node is
  the storm's length, from the first power-on to the last node's runlevel.
- boot files: power-on to runlevel minus the kernel's uptime then (firmware, DHCP, script,
  kernel and initramfs); kernel to runlevel: the kernel's uptime at the runlevel (initramfs
  DHCP, the NFS root, systemd).
- server CPU: every process of the server side (a cgroup: serve and its nfs-ganesha, or
  dnsmasq, nginx and the ganesha-only serve) from the first power-on to the last runlevel;
  DHCP/TFTP/HTTP CPU is that minus nfs-ganesha's.
- retries: iPXE script retries and initramfs step retries seen on the consoles.
- QEMU CPU and peak RSS: every node's QEMU process together (the guests' CPU is what limits
  N on 2 CPUs under TCG); power-on spread: first to last QEMU start.
"""


def write_markdown(results: dict[str, Any], out: Path, reading: str = "") -> None:
    lines = [HEADER]
    for run in sorted(results["runs"], key=lambda r: int(r["nodes"])):
        lines += _run_lines(run)
    if reading:
        lines += [reading.rstrip(), ""]
    out.write_text("\n".join(lines))
