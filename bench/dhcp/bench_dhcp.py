"""DHCP benchmark: full DORA exchanges per second at concurrency 1/8/32 against oneroot, Kea
(memfile, persist=true) and dnsmasq, each in a fresh network namespace pair
(oneroot.testing.netns).

Each server's CPU time comes from /proc/<pid>/stat (utime + stime) over the run, the load
generator's from its own process time. Bounded: each run lasts --seconds; each row is the
median (by rate) of --runs runs. Writes bench/results/dhcp.md and dhcp.json. Needs root.
    .venv/bin/python bench/dhcp/bench_dhcp.py [--seconds 4] [--runs 3] [--only NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from oneroot.testing.netns import Link, linked_namespaces

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

CONCURRENCY = (1, 8, 32)
TICKS = os.sysconf("SC_CLK_TCK")
POOL = ("10.1.0.10", "10.1.255.250")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


def wait_bound(link: Link, proc: subprocess.Popen[bytes], port: int = 67) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        out = link.server.ns.run("ss", "-H", "-uln").stdout
        if f":{port} " in out or f":{port}\n" in out:
            time.sleep(0.3)
            return
        time.sleep(0.1)
    raise RuntimeError("server did not bind port 67")


def start_oneroot(link: Link, work: Path, synchronous: str, mode: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(link.server.cmd(
        sys.executable, str(HERE / "run_oneroot.py"), "--interface", link.server.interface,
        "--db", str(work / "leases.db"), "--synchronous", synchronous, "--mode", mode),
        stdout=subprocess.DEVNULL, stderr=(work / "server.log").open("wb"))


def start_kea(link: Link, work: Path) -> subprocess.Popen[bytes]:
    config = {"Dhcp4": {
        "interfaces-config": {"interfaces": [link.server.interface], "dhcp-socket-type": "raw"},
        "lease-database": {"type": "memfile", "persist": True, "lfc-interval": 0,
                           "name": str(work / "kea-leases4.csv")},
        "valid-lifetime": 3600,
        "subnet4": [{"id": 1, "subnet": "10.1.0.0/16",
                     "pools": [{"pool": f"{POOL[0]} - {POOL[1]}"}],
                     "option-data": [{"name": "routers", "data": "10.1.0.1"},
                                     {"name": "domain-name-servers", "data": "10.1.0.1"}]}],
        "loggers": [{"name": "kea-dhcp4", "severity": "WARN",
                     "output_options": [{"output": "stderr"}]}],
    }}
    path = work / "kea.json"
    path.write_text(json.dumps(config))
    env = dict(os.environ, KEA_PIDFILE_DIR=str(work), KEA_LOCKFILE_DIR=str(work))
    return subprocess.Popen(link.server.cmd("/usr/sbin/kea-dhcp4", "-c", str(path)),
                            stdout=subprocess.DEVNULL, stderr=(work / "server.log").open("wb"),
                            env=env)


def start_dnsmasq(link: Link, work: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(link.server.cmd(
        "/usr/sbin/dnsmasq", "--keep-in-foreground", "--no-daemon", "--conf-file=/dev/null",
        "--port=0", f"--interface={link.server.interface}", "--bind-interfaces",
        f"--dhcp-range={POOL[0]},{POOL[1]},255.255.0.0,1h", "--dhcp-authoritative",
        f"--dhcp-leasefile={work / 'dnsmasq.leases'}", "--dhcp-lease-max=100000",
        "--no-ping", "--quiet-dhcp", "--user=root", f"--pid-file={work / 'dnsmasq.pid'}",
        "--dhcp-option=3,10.1.0.1", "--dhcp-option=6,10.1.0.1"),
        stdout=subprocess.DEVNULL, stderr=(work / "server.log").open("wb"))


def versions() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        return (result.stdout or result.stderr).strip().splitlines()[0]

    from importlib.metadata import version

    return {
        "oneroot": f"{version('oneroot')} (Python {platform.python_version()}, "
                   f"SQLite {sqlite3.sqlite_version})",
        "kea-dhcp4": first_line(["/usr/sbin/kea-dhcp4", "-v"]),
        "dnsmasq": first_line(["/usr/sbin/dnsmasq", "-v"]),
        "kernel": platform.release(),
        "cpus": str(os.cpu_count()),
    }


def run_one(name: str, start: Callable[[Link, Path], subprocess.Popen[bytes]],
            concurrency: int, seconds: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="dhcpbench-") as tmp, \
            linked_namespaces("10.1.0.1/16") as link:
        work = Path(tmp)
        proc = start(link, work)
        try:
            wait_bound(link, proc)
            cpu_before = cpu_seconds(proc.pid)
            result = link.client.ns.run(
                sys.executable, str(HERE / "loadgen.py"), "--interface", link.client.interface,
                "--concurrency", str(concurrency), "--seconds", str(seconds),
                timeout=seconds + 60, check=False)
            if result.returncode != 0:
                raise RuntimeError(f"load generator failed: {result.stderr[-500:]}")
            cpu = cpu_seconds(proc.pid) - cpu_before
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        row: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
        row["server"] = name
        row["server_cpu_s"] = round(cpu, 2)
        exchanges = int(row["exchanges"])  # type: ignore[call-overload]
        row["exchanges_per_cpu_s"] = round(exchanges / cpu, 1) if cpu > 0 else None
        row["server_us_per_exchange"] = round(cpu / exchanges * 1e6) if exchanges else None
        return row


def median_row(results: list[dict[str, object]]) -> dict[str, object]:
    """The run with the median rate (other jobs share this machine)."""
    results = sorted(results, key=lambda row: float(row["rate"]))  # type: ignore[arg-type]
    row = results[len(results) // 2]
    row["runs"] = len(results)
    row["rates"] = [result["rate"] for result in results]
    return row


def _oneroot(synchronous: str, mode: str) -> Callable[[Link, Path], subprocess.Popen[bytes]]:
    return lambda link, work: start_oneroot(link, work, synchronous, mode)


SERVERS: dict[str, Callable[[Link, Path], subprocess.Popen[bytes]]] = {
    "oneroot nodes, sync=NORMAL": _oneroot("NORMAL", "nodes"),
    "oneroot nodes, sync=FULL (fsync)": _oneroot("FULL", "nodes"),
    "oneroot pool, sync=NORMAL": _oneroot("NORMAL", "pool"),
    "oneroot pool, sync=FULL (fsync)": _oneroot("FULL", "pool"),
    "kea memfile persist=true": start_kea,
    "dnsmasq": start_dnsmasq,
}


NOTES = [
    "oneroot *nodes*: every MAC is a known node with a fixed address (the product's case);",
    "the lease is committed to SQLite (WAL) before the ACK leaves. *pool*: unknown MACs,",
    "discovery pool (each DISCOVER also records the unknown client). Commits are grouped per",
    "batch of datagrams read in one loop callback. `sync=NORMAL` appends to the WAL inline;",
    "`sync=FULL` fsyncs each group in a worker thread while the loop decides and stages the",
    "next group (pipelined group commit). Kea memfile and dnsmasq write their lease files",
    "without fsync.",
    "",
    "The load generator (`loadgen.py`, Python) shares the 2 CPUs with the server, so rates",
    "are a floor for every server and at concurrency 32 both processes are near a full CPU.",
    "It patches byte templates and runs each exchange as two callbacks; the earlier one (a",
    "coroutine and `wait_for` per message, the full codec both ways) used more CPU than the",
    "servers and held Kea to ~6,000/s. `server µs per exchange` (server CPU / exchanges) is",
    "the figure least disturbed by the generator and by other jobs on this machine, whose",
    "load moves rates by up to 2× between runs (see `rates`).",
    "dnsmasq's `failed` are exchanges with no reply within 1 s.",
    "",
    "## Where oneroot's time goes",
    "",
    "In-process, without sockets (`bench/dhcp/profile_core.py`, CPU time, batches of 8):",
    "~62 µs of Python per DORA in nodes mode, ~80 µs in pool mode (was ~103/125 µs).",
    "Per exchange: parse 2 × ~7 µs (the options walk, a 15-field frozen `DhcpPacket`),",
    "`respond` ~18 µs (DISCOVER) + ~21 µs (REQUEST), of which building the frozen",
    "dataclasses (`DhcpPacket`, `Decision`, `ReplyEvent`, `LeaseChange`) is about half,",
    "encode 2 × ~3 µs, lease stage and the batch's `executemany` + COMMIT ~10 µs.",
    "In the server at concurrency 32 (py-spy and perf): ~45% deciding (above), ~15-20% in",
    "`sendto` (the kernel delivers each broadcast reply across the veth inside that call),",
    "~8% `recvfrom`, ~10% the commits, ~6% epoll and the asyncio loop, ~7% building the",
    "`BootEvent` and the disabled `log.info` per reply. At concurrency 1 every exchange is",
    "two loop wake-ups and a commit of its own (~30 µs CPU: WAL frames for 3 b-tree pages",
    "plus fcntl locks), hence ~270 µs per exchange there. Over three full runs oneroot",
    "(nodes, NORMAL) took 264-325 / 139-170 / 116-141 µs per exchange at concurrency",
    "1 / 8 / 32, Kea 149-177 / 91-94 / 71-105 µs: Kea needs 20-45% less CPU per exchange.",
    "The gap is interpreter work (object construction, attribute access) more than IO.",
    "",
    "What changed (was: 1279/2341/2442 exchanges/s, ~400-490 µs of server CPU per exchange",
    "in nodes mode, sync=NORMAL): datagrams are drained and handled in the reader callback",
    "(no asyncio.Queue, no task wake-up); each config's option values are encoded once; the",
    "codec skips re-validating what it just parsed and shares the 0.0.0.0 address object;",
    "lease statements are queued in memory and written with one `executemany` per group;",
    "WAL checkpoints (which fsync even at NORMAL) run in a worker thread; FULL commits are",
    "pipelined; `BootCatalog.dhcp_lookup` is cached per catalog.",
]


def write_results(rows: list[dict[str, object]], meta: dict[str, str], seconds: float,
                  runs: int) -> None:
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "dhcp.json").write_text(json.dumps({"versions": meta, "seconds": seconds,
                                               "runs": runs, "rows": rows}, indent=2) + "\n")
    lines = [
        "# DHCP: full DORA exchanges per second",
        "",
        "Produced by `.venv/bin/python bench/dhcp/bench_dhcp.py --seconds "
        f"{seconds:g} --runs {runs}` (root; each server and the load generator in a fresh",
        "namespace pair on one veth, created and removed by the bench). Each row is the run with",
        f"the median rate of {runs} (other jobs share this 2-CPU machine; `rates` in dhcp.json",
        "lists all of them). Each exchange: DISCOVER → OFFER → REQUEST → ACK, a fresh MAC each,",
        "broadcast replies.",
        "",
        *NOTES,
        "",
        "Versions: " + "; ".join(f"{k} {v}" for k, v in meta.items()),
        "",
        "| server | concurrency | exchanges/s | exchanges | failed | p50 ms | p99 ms "
        "| server CPU s | server µs per exchange | load generator CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['server']} | {row['concurrency']} | {row['rate']} | {row['exchanges']} "
            f"| {row['failed']} | {row['p50_ms']} | {row['p99_ms']} | {row['server_cpu_s']} "
            f"| {row.get('server_us_per_exchange')} | {row.get('loadgen_cpu_s')} |")
    (out / "dhcp.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=3, help="runs per row; the median is kept")
    parser.add_argument("--only", action="append", help="substring of server names to run")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite dhcp.md from the last dhcp.json")
    args = parser.parse_args()
    if args.render:
        last = json.loads((ROOT / "bench" / "results" / "dhcp.json").read_text())
        write_results(last["rows"], last["versions"], last["seconds"], last.get("runs", 1))
        return
    meta = versions()
    chosen = [(name, start) for name, start in SERVERS.items()
              if not args.only or any(part in name for part in args.only)]
    # Rounds interleave the servers, so load from other jobs falls on each of them alike.
    results: dict[tuple[str, int], list[dict[str, object]]] = {}
    errors: dict[tuple[str, int], str] = {}
    for _ in range(args.runs):
        for name, start in chosen:
            for concurrency in CONCURRENCY:
                try:
                    row = run_one(name, start, concurrency, args.seconds)
                except Exception as exc:  # one broken incumbent must not lose the other rows
                    errors[name, concurrency] = f"{type(exc).__name__}: {exc}"
                    continue
                print(json.dumps(row), flush=True)
                results.setdefault((name, concurrency), []).append(row)
    rows: list[dict[str, object]] = []
    for name, _ in chosen:
        for concurrency in CONCURRENCY:
            if (name, concurrency) in results:
                rows.append(median_row(results[name, concurrency]))
            else:
                rows.append({"server": name, "concurrency": concurrency, "rate": None,
                             "exchanges": 0, "failed": None, "p50_ms": None, "p99_ms": None,
                             "server_cpu_s": None, "exchanges_per_cpu_s": None,
                             "error": errors.get((name, concurrency))})
    write_results(rows, meta, args.seconds, args.runs)


if __name__ == "__main__":
    main()
