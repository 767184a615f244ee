"""QEMU boot storm (issue 15): N real lab nodes powered on at the same moment, each to its
runlevel, against `oneroot serve` and then, in the same run, against dnsmasq + nginx serving
the same rendered files and the same NFS root (bench/storm/qemu_report.py says what is
measured and how).

The lab (bench/union's Bench: a LabCluster with N nodes, the Debian image, our initramfs) is
prepared without QEMU, so it can be done before taking the lock:

    .venv/bin/python bench/storm/qemu_storm.py --workdir /tmp/qemu-storm --prepare-only
    flock /tmp/oneroot-qemu.lock .venv/bin/python bench/storm/qemu_storm.py \
        --workdir /tmp/qemu-storm --nodes 4

Writes bench/results/storm-qemu.md and storm-qemu.json (a run replaces the earlier run of the
same node count, and keeps the others). Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "union"))
import qemu_report  # noqa: E402
import servers  # noqa: E402
from bench_union import Bench, machine, versions  # noqa: E402

from oneroot.lab.qemu import QemuVm  # noqa: E402
from oneroot.ops.lab import SERVER  # noqa: E402
from oneroot.testing.labprobe import AFTER_RUNLEVEL, PROBE_LIB, install_probe  # noqa: E402

RESULTS = HERE.parent / "results" / "storm-qemu.json"
BASELINE_SERVE = ("--no-dhcp", "--no-tftp", "--no-http")  # nfs-ganesha only
# The node says it reached its runlevel, and stays up (idle, as after a real storm) until the
# host stops it once every node is up.
PROBE = ("#!/bin/bash\n" + PROBE_LIB +
         "say runlevel=reached uptime=$(cut -d' ' -f1 /proc/uptime)\n")
POLL = 0.2


class Storm:
    """One server side in the lab (the cgroup `meter` holds all its processes), N nodes."""

    def __init__(self, bench: Bench, server: str, http_port: int) -> None:
        self.b, self.server, self.http_port = bench, server, http_port
        self.meter = servers.Meter(f"qemu-{server}")
        self.qemu_meter = servers.Meter(f"qemu-vms-{server}")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def reset_layers(self) -> None:
        """Every node's layer as new, with the probe (serve is stopped)."""
        for node in self.b.nodes:
            self.b.c.oneroot("overlay", "reset", node, "--yes", "--no-archive")
            install_probe(self.b.c, node, PROBE, after=AFTER_RUNLEVEL)

    def start(self) -> None:
        c = self.b.c
        if self.server == "oneroot":
            c.start()
        else:
            c.start(serve_args=BASELINE_SERVE)
            self._start_baseline()
        assert c.serve_proc is not None and c.lab is not None
        running = servers.Running(self.meter, [c.serve_proc, *self.procs],
                                  [c.serve_log, *self.logs])
        servers.wait_ready(c.lab.netns, running, self.http_port)
        # Into the cgroup once up (`ip netns exec` mounts its own /sys: no cgroup inside),
        # with the children they started (ganesha; nginx's workers); CPU counts from here.
        for proc in running.procs:
            self.meter.adopt(proc.pid)

    def _start_baseline(self) -> None:
        """dnsmasq and nginx on `oneroot render`'s files: the boot tree in its own directory
        (with the boot dir's kernel and initramfs linked in), the configs beside it."""
        c = self.b.c
        assert c.lab is not None
        rendered = c.workdir / "rendered"
        c.oneroot("render", "--out", str(rendered))
        for name in ("vmlinuz", "initramfs.img"):
            (rendered / name).unlink(missing_ok=True)
            (rendered / name).hardlink_to(c.boot_dir / name)
        work = c.workdir / "baseline"
        work.mkdir(exist_ok=True)
        argvs = servers.baseline_argvs(rendered / "config", rendered, work,
                                       f"{SERVER}:{self.http_port}", len(self.b.nodes))
        for name, argv in argvs.items():
            self.logs.append(work / f"{name}.log")
            with self.logs[-1].open("ab") as log:
                self.procs.append(c.lab.popen_in_ns(argv, what=name,
                                                    stdout=log, stderr=subprocess.STDOUT))

    def same_script(self) -> bool:
        """Whether what this server's HTTP answers for node01's iPXE script is what
        `oneroot render` wrote for it (the baseline serves that file)."""
        c = self.b.c
        assert c.lab is not None
        url = f"http://{SERVER}:{self.http_port}/boot/node01.ipxe"
        served = c.lab.run_in_ns(["curl", "-sf", url], check=False).stdout
        rendered = c.workdir / "rendered" / "node01.ipxe"
        if not rendered.exists():
            c.oneroot("render", "--out", str(c.workdir / "rendered"))
        return bool(served) and served == rendered.read_text()

    def stop(self) -> None:
        c = self.b.c
        for proc in self.procs:
            if c.lab is not None:
                c.lab.stop_process(proc, timeout=10)
        self.procs.clear()
        self.logs.clear()
        c.stop()
        for meter in (self.meter, self.qemu_meter):
            meter.stop_sampling()
            meter.close()

    def ganesha_cpu(self) -> float:
        return sum(servers.process_cpu_seconds(pid) for pid in self.meter.pids()
                   if _comm(pid) == "ganesha.nfsd")

    def run(self, timeout: float) -> dict[str, Any]:
        """Power every node on, wait for each one's runlevel; the storm's row."""
        c = self.b.c
        load, available = [round(x, 2) for x in os.getloadavg()], _mem_available_gb()
        cpu0, nfs0 = self.meter.cpu_seconds(), self.ganesha_cpu()
        self.qemu_meter.start_sampling()
        for node in self.b.nodes:
            vm = c.boot(node)
            assert vm.pid is not None
            self.qemu_meter.adopt(vm.pid)
        vms = {node: c.vms[node] for node in self.b.nodes}
        seen = watch(vms, timeout)
        cpu, nfs = self.meter.cpu_seconds() - cpu0, self.ganesha_cpu() - nfs0
        self.qemu_meter.stop_sampling()
        t0 = min(vm.started_at or 0.0 for vm in vms.values())
        nodes = [node_row(node, vm, seen[node], t0) for node, vm in vms.items()]
        return {"server": self.server, "load_at_start": load,
                "mem_available_gb_at_start": available,
                "power_on_spread_s": round(max(vm.started_at or 0.0 for vm in vms.values())
                                           - t0, 2),
                "server_cpu_s": round(cpu, 1), "nfs_cpu_s": round(nfs, 1),
                "boot_services_cpu_s": round(cpu - nfs, 1),
                "qemu_cpu_s": round(self.qemu_meter.cpu_seconds(), 1),
                "qemu_peak_rss_gb": round(self.qemu_meter.peak_rss / 1e9, 2),
                "same_script": self.same_script(),
                "nodes": nodes, "summary": qemu_report.summarize(nodes)}


def watch(vms: dict[str, QemuVm], timeout: float) -> dict[str, tuple[float, str, str]]:
    """Poll every console until each node reached its runlevel or failed: node -> (host time
    seen, "ok" | "failed", uptime | reason). One loop for all, so no node waits for another."""
    deadline = time.monotonic() + timeout
    seen: dict[str, tuple[float, str, str]] = {}
    while len(seen) < len(vms) and time.monotonic() < deadline:
        for node, vm in vms.items():
            if node in seen:
                continue
            state = qemu_report.console_state(vm.serial_text())
            if state is None and not vm.running():
                state = "failed", "QEMU exited"
            if state is not None:
                seen[node] = (time.monotonic(), *state)
                print(f"    {node}: {state[0]} {vm.elapsed():.1f} s after power-on", flush=True)
        time.sleep(POLL)
    for node in vms.keys() - seen.keys():
        seen[node] = (time.monotonic(), "failed", f"no runlevel within {timeout:g} s")
    return seen


def node_row(node: str, vm: QemuVm, seen: tuple[float, str, str], t0: float) -> dict[str, Any]:
    at, state, detail = seen
    text = vm.serial_text()
    row: dict[str, Any] = {"node": node, "ok": state == "ok",
                           "retries": qemu_report.retries(text)}
    if state != "ok":
        print(f"    {node} failed ({detail}); console tail:\n{text[-3000:]}", flush=True)
        return {**row, "error": detail}
    runlevel = at - (vm.started_at or t0)
    return {**row, "runlevel_s": round(runlevel, 1), "at_s": round(at - t0, 1),
            "uptime_s": float(detail), "boot_files_s": round(runlevel - float(detail), 1)}


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _mem_available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return round(int(line.split()[1]) * 1024 / 1e9, 1)
    return 0.0


def http_port(bench: Bench) -> int:
    shown = json.loads(bench.c.oneroot("settings", "show", "--json").stdout)
    return int(shown.get("http_port", 8080))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=4, help="nodes powered on at once [4]")
    ap.add_argument("--servers", default="oneroot,baseline",
                    help="in this order, each its own storm [oneroot,baseline]")
    ap.add_argument("--timeout", type=float, default=420,
                    help="seconds from power-on until a node without its runlevel failed [420]")
    ap.add_argument("--workdir", type=Path, help="keep the lab's files here [a temp dir]")
    ap.add_argument("--prepare-only", action="store_true",
                    help="build the lab's files and nodes, start no QEMU")
    args = ap.parse_args()
    run: dict[str, Any] = {"nodes": args.nodes,
                           "command": " ".join(["bench/storm/qemu_storm.py", *sys.argv[1:]]),
                           "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                           "machine": {**machine(), "kernel": platform.release(),
                                       "memory_gb": round(os.sysconf("SC_PAGE_SIZE")
                                                          * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)},
                           "versions": {**versions(),
                                        "nginx": servers.version_of(["/usr/sbin/nginx", "-v"])},
                           "storms": []}
    with tempfile.TemporaryDirectory(prefix="qemu-storm-") as tmp:
        b = Bench(args.workdir or Path(tmp), nodes=args.nodes)
        b.prepare()
        if args.prepare_only:
            return 0
        port = http_port(b)
        for server in args.servers.split(","):
            storm = Storm(b, server, port)
            storm.reset_layers()
            print(f"storm: {args.nodes} nodes, {server}", flush=True)
            try:
                storm.start()
                run["storms"].append(storm.run(args.timeout))
            finally:
                storm.stop()
    previous = json.loads(RESULTS.read_text())["runs"] if RESULTS.exists() else []
    results = {"runs": qemu_report.merge_runs(previous, run)}
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    md = RESULTS.with_suffix(".md")
    old = md.read_text() if md.exists() else ""
    reading = old[old.index("## Reading"):] if "## Reading" in old else ""
    qemu_report.write_markdown(results, md, reading)
    print(md.read_text())
    return 0 if all(s["summary"]["failed"] == 0 for s in run["storms"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
