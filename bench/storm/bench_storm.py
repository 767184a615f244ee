"""Boot storm: N simulated PXE nodes power on at once against `oneroot serve`, and against
dnsmasq + nginx serving the same rendered files, in the same run (issue 15).

For each N: a oneroot home with N nodes (`oneroot init`, `oneroot node add`, `oneroot render`;
the lab's kernel and initramfs when ~/.cache/oneroot has them, else random files of their
size), then for each server a fresh network (netns.py: a switch, the server on it), the
server started, and bench/storm/client.py booting the N nodes (see its docstring for what a
node does). Measured: the time until every node has every file, failures, per-node p50/p99,
server CPU and peak RSS, and where packets were dropped. Writes bench/results/storm.md and
storm.json. Needs root; every packet stays in namespaces this run creates and deletes (also
on failure and Ctrl-C).

    .venv/bin/python bench/storm/bench_storm.py [--nodes 100,500,1000] [--servers oneroot,baseline]
        [--repeat 3 | --repeat 3,3,1]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import servers  # noqa: E402
from netns import (  # noqa: E402
    create_network,
    delete_namespace,
    delete_stale_namespaces,
    drop_counters,
    host_room_for,
)

SERVER = ipaddress.IPv4Interface("10.9.0.1/16")
FIRST_NODE_IP = "10.9.1.1"
HTTP_PORT = 8080
NS_PREFIX = "storm-"
ARCH = {"bios": (0, "undionly.kpxe"), "uefi": (7, "ipxe.efi")}
LAB_KERNEL_GLOB = "kernels/*/boot/vmlinuz-*"
# oneroot with limits changed, run beside the default in the same run (`--servers`)
ONEROOT_VARIANTS: dict[str, tuple[str, ...]] = {
    "oneroot": (),
    "oneroot-loop": ("--limit", "tftp_lockstep_threads=0"),  # no lock-step thread at all
    # every boot-file body sent on the event loop, no sendfile thread (before serve/sendfile.py)
    "oneroot-loopfiles": ("--limit", "http_sendfile_threads=0"),
    # a big body that finds the sendfile threads busy goes to the loop at once (no wait)
    "oneroot-nowait": ("--limit", "http_sendfile_wait=0"),
    # HTTP answered in serve's own process, next to DHCP and TFTP (before serve/httpworkers.py)
    "oneroot-inprocess": ("--limit", "http_workers=0"),
    # two HTTP worker processes (nginx's count here: one per CPU)
    "oneroot-2workers": ("--limit", "http_workers=2"),
    # ... with every boot-file body on the workers' loops
    "oneroot-2workers-loopfiles": ("--limit", "http_workers=2",
                                   "--limit", "http_sendfile_threads=0"),
}
SIZES = {"vmlinuz": 8_247_232, "initramfs.img": 3_985_087}  # the lab's, when not cached


def oneroot_bin() -> Path:
    return Path(sys.executable).parent / "oneroot"


def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)  # type: ignore[call-overload, no-any-return]


def boot_payload(cache: Path, out: Path, kind: str) -> str:
    """vmlinuz and initramfs.img in `out`: the lab's (its cached kernel, and the initramfs
    `oneroot initramfs build` makes of it), else random bytes of the same sizes."""
    out.mkdir(parents=True, exist_ok=True)
    kernels = sorted(cache.glob(LAB_KERNEL_GLOB)) if kind == "lab" else []
    if kernels:
        kernel_dir = kernels[-1].parents[1]
        home = out / "build-home"
        run([str(oneroot_bin()), "--home", str(home), "init", "--server", "10.9.0.1",
             "--subnet", "10.9.0.0/16", "--interface", "br0", "--boot-dir", str(out),
             "--state-dir", str(out / "state"), "--image-root", str(out)])
        run([str(oneroot_bin()), "--home", str(home), "initramfs", "build", "--kernel",
             str(kernel_dir), "--out", str(out / "initramfs.img"), "--no-install-kernel"])
        shutil.copyfile(kernels[-1], out / "vmlinuz")
        return f"the lab's kernel {kernels[-1].name} and `oneroot initramfs build` of it"
    for name, size in SIZES.items():
        (out / name).write_bytes(os.urandom(size))
    return "random files of the lab's kernel and initramfs sizes (no cached lab kernel)"


def prepare_home(work: Path, nodes: int, payload: Path) -> Path:
    """A oneroot home with `nodes` nodes and its rendered boot dir."""
    home, boot = work / "home", work / "boot"
    (work / "image").mkdir(parents=True)
    boot.mkdir()
    oneroot = str(oneroot_bin())
    run([oneroot, "--home", str(home), "init", "--server", str(SERVER.ip), "--subnet",
         str(SERVER.network), "--interface", "eth0", "--boot-dir", str(boot), "--state-dir",
         str(work / "state"), "--image-root", str(work / "image"), "--http-port", str(HTTP_PORT)])
    macs = work / "macs.txt"
    macs.write_text("".join(f"02:00:0a:09:{i >> 8:02x}:{i & 255:02x}\n"
                            for i in range(1, nodes + 1)))
    run([oneroot, "--home", str(home), "node", "add", f"n[0001-{nodes:04d}]", "--macs-file",
         str(macs), "--ip", FIRST_NODE_IP])
    for name in ("vmlinuz", "initramfs.img"):
        shutil.copyfile(payload / name, boot / name)
    for loader in ("undionly.kpxe", "ipxe.efi"):  # what serve copies at start; dnsmasq too
        shutil.copyfile(Path("/usr/lib/ipxe") / loader, boot / loader)
    run([oneroot, "--home", str(home), "render"], timeout=600)
    return home


def manifest(boot: Path, arch: str, out: Path) -> Path:
    number, loader = ARCH[arch]
    files = {}
    for name in (loader, "vmlinuz", "initramfs.img"):
        data = (boot / name).read_bytes()
        files[name] = [len(data), zlib.crc32(data)]
    out.write_text(json.dumps({"files": files, "http_port": HTTP_PORT, "arch": number}))
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(server: str, report: dict[str, object], cpu: float, meter: servers.Meter
              ) -> dict[str, object]:
    results: list[dict[str, object]] = report["results"]  # type: ignore[assignment]
    ok = [r for r in results if r["ok"]]
    failed = [r for r in results if not r["ok"]]

    def marks(stage: str) -> list[float]:
        return [float(r["marks"][stage]) for r in ok]  # type: ignore[index]

    files = marks("files")
    all_files = max((float(r["power_on"]) + float(r["marks"]["files"])  # type: ignore[index]
                     for r in ok), default=None)
    retries: dict[str, int] = {}
    for r in results:
        for key, count in r["retries"].items():  # type: ignore[attr-defined]
            retries[key] = retries.get(key, 0) + count
    stage_p50 = {stage: round(statistics.median(marks(stage)), 3) for stage in
                 ("dhcp_pxe", "tftp", "dhcp_ipxe", "files", "dhcp_initramfs", "reports")
                 if ok}
    return {
        "server": server, "nodes": report["nodes"], "ok": len(ok), "failed": len(failed),
        "errors": sorted({str(r["error"]) for r in failed})[:10],
        "all_files_s": round(all_files, 3) if all_files is not None else None,
        "files_p50_s": round(percentile(files, 0.5), 3) if files else None,
        "files_p99_s": round(percentile(files, 0.99), 3) if files else None,
        "wall_s": report["wall_s"], "stage_p50_s": stage_p50, "retries": retries,
        "report_failures": sum(int(r["report_failures"]) for r in results),  # type: ignore[call-overload]
        "server_cpu_s": round(cpu, 2), "server_peak_rss_mb": round(meter.peak_rss / 1e6, 1),
        "server_hwm_sum_mb": round(sum(meter.hwm.values()) / 1e6, 1),
        "loadgen_cpu_s": report["loadgen_cpu_s"], "setup_s": report["setup_s"],
    }


def storm(server: str, nodes: int, home: Path, work: Path, manifest_path: Path,
          args: argparse.Namespace) -> dict[str, object]:
    ns, switch = f"{NS_PREFIX}srv-{os.getpid()}", f"{NS_PREFIX}sw-{os.getpid()}"
    create_network(ns, switch, SERVER)
    running: servers.Running | None = None
    try:
        if server in ONEROOT_VARIANTS:
            running = servers.start_oneroot(ns, oneroot_bin(), home, work,
                                            ONEROOT_VARIANTS[server] + tuple(args.serve_arg))
        else:
            running = servers.start_baseline(ns, home, work / "boot", work,
                                             f"{SERVER.ip}:{HTTP_PORT}", nodes)
        servers.wait_ready(ns, running, HTTP_PORT)
        profiler = (servers.Profiler(running.procs[0].pid, work / f"pyspy-{server}.txt")
                    if args.profile and server in ONEROOT_VARIANTS else None)
        running.meter.start_sampling()
        cpu0, by_process0 = running.meter.cpu_seconds(), running.meter.cpu_by_process()
        drops0 = drop_counters(ns, switch)
        out = work / f"client-{server}.json"
        with host_room_for(nodes):
            done = subprocess.run(
                [sys.executable, str(HERE / "client.py"), "--switch-ns", switch, "--nodes",
                 str(nodes), "--manifest", str(manifest_path), "--out", str(out),
                 "--spread", str(args.spread), "--verify-every", str(args.verify_every)],
                capture_output=True, text=True, timeout=args.timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"client.py failed: {done.stderr[-2000:]}")
        cpu = running.meter.cpu_seconds() - cpu0
        by_process = {kind: round(seconds - by_process0.get(kind, 0.0), 2) for kind, seconds
                      in running.meter.cpu_by_process().items()}
        running.check_alive()
        running.meter.stop_sampling()
        row = summarize(server, json.loads(out.read_text()), cpu, running.meter)
        row["server_cpu_by_process_s"] = by_process
        drops1 = drop_counters(ns, switch)
        row["drops"] = {k: drops1[k] - drops0.get(k, 0) for k in drops1}
        if profiler is not None:
            row["profile"] = profiler.stop()
        return row
    finally:
        if running is not None:
            running.meter.stop_sampling()
            running.stop()
            running.meter.close()
        delete_namespace(ns)
        delete_namespace(switch)


def machine() -> dict[str, object]:
    cpu_model = next((line.split(":", 1)[1].strip() for line in
                      Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "?")
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "cpu_model": cpu_model,
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9,
                               1)}


def versions() -> dict[str, str]:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    from importlib.metadata import version

    return {"oneroot": f"{version('oneroot')} at {commit} (Python {platform.python_version()}, "
                       f"aiohttp {version('aiohttp')})",
            "dnsmasq": servers.version_of(["/usr/sbin/dnsmasq", "-v"]),
            "nginx": servers.version_of(["/usr/sbin/nginx", "-v"]),
            "ipxe loader": "Debian ipxe package, /usr/lib/ipxe"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", default="100,500,1000")
    parser.add_argument("--servers", default="oneroot,baseline",
                        help=f"of baseline,{','.join(ONEROOT_VARIANTS)}")
    parser.add_argument("--arch", choices=sorted(ARCH), default="bios")
    parser.add_argument("--spread", type=float, default=1.0)
    parser.add_argument("--verify-every", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "storm")
    parser.add_argument("--payload", choices=("lab", "random"), default="lab",
                        help="the lab's kernel and initramfs when cached, or random bytes")
    parser.add_argument("--profile", action="store_true",
                        help="sample oneroot serve with py-spy during the storm (in the JSON)")
    parser.add_argument("--workdir", type=Path, help="keep homes and server logs here")
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="one more argument for `oneroot serve` (an experiment: say so)")
    parser.add_argument("--repeat", default="1",
                        help="storms per server and N, the servers taking turns (paired); "
                             "one count, or one per --nodes entry (3,3,1)")
    parser.add_argument("--no-write", action="store_true", help="print, write no results")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces)")
    delete_stale_namespaces(NS_PREFIX)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="storm-") as tmp_dir:
        tmp = str(args.workdir or tmp_dir)
        payload_note = boot_payload(Path.home() / ".cache" / "oneroot", Path(tmp) / "payload",
                                    args.payload)
        sizes = [int(n) for n in args.nodes.split(",")]
        repeats = [int(r) for r in args.repeat.split(",")]
        if len(repeats) not in (1, len(sizes)):
            parser.error("--repeat: one count, or one per --nodes entry")
        for nodes, repeat in zip(sizes, repeats * len(sizes) if len(repeats) == 1 else repeats,
                                 strict=True):
            work = Path(tmp) / f"n{nodes}"
            home = prepare_home(work, nodes, Path(tmp) / "payload")
            manifest_path = manifest(work / "boot", args.arch, work / "manifest.json")
            order = args.servers.split(",")
            for rep in range(repeat):
                # pairs in alternating order, so a machine getting busier favours neither
                for server in order if rep % 2 == 0 else order[::-1]:
                    load = [round(x, 2) for x in os.getloadavg()]
                    row = storm(server, nodes, home, work, manifest_path, args)
                    row.update(rep=rep, load_before=load,
                               load_after=[round(x, 2) for x in os.getloadavg()])
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    report = {"command": "bench/storm/bench_storm.py " + " ".join(sys.argv[1:]),
              "date": started, "machine": machine(), "versions": versions(),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "arch": args.arch, "payload": payload_note, "spread_s": args.spread,
              "oneroot_argv": ["oneroot", "--home", "HOME", *servers.ONEROOT_ARGV,
                               *args.serve_arg],
              "variants": {name: list(extra) for name, extra in ONEROOT_VARIANTS.items()
                           if name in args.servers.split(",") and extra},
              "rows": rows}
    if not args.no_write:
        from results import write_results

        write_results(report, args.out)
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
