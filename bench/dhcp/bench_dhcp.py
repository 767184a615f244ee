"""DHCP benchmark: full DORA exchanges per second at concurrency 1/8/32 against oneroot, Kea
(memfile, persist=true) and dnsmasq, each in a fresh network namespace pair on a veth.

Each server's CPU time comes from /proc/<pid>/stat (utime + stime) over the run. Bounded: each
run lasts --seconds. Writes bench/results/dhcp.md and dhcp.json. Needs root.
    .venv/bin/python bench/dhcp/bench_dhcp.py [--seconds 4]
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from netns import Link, linked_namespaces  # noqa: E402

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
            linked_namespaces("10.1.0.1/16", prefix="orbench") as link:
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


def write_results(rows: list[dict[str, object]], meta: dict[str, str], seconds: float) -> None:
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "dhcp.json").write_text(json.dumps({"versions": meta, "seconds": seconds,
                                               "rows": rows}, indent=2) + "\n")
    lines = [
        "# DHCP: full DORA exchanges per second",
        "",
        "Produced by `.venv/bin/python bench/dhcp/bench_dhcp.py --seconds "
        f"{seconds:g}` (root; servers and load generator in a namespace pair on one veth).",
        "Each exchange: DISCOVER → OFFER → REQUEST → ACK, a fresh MAC each, broadcast replies.",
        "The load generator (Python asyncio) shares the machine's CPUs with the server: rates",
        "are a floor for every server. Server CPU from /proc/<pid>/stat over the run.",
        "",
        "oneroot *nodes*: every MAC is a known node with a fixed address (the product's case);",
        "the lease is committed to SQLite (WAL) before the ACK leaves. *pool*: unknown MACs,",
        "discovery pool (also records each unknown client). `sync=FULL` fsyncs every commit;",
        "commits are grouped per batch of datagrams. Kea memfile and dnsmasq write their lease",
        "files without fsync.",
        "",
        "Where oneroot's time goes (cProfile, in-process DORA without sockets): ~100 µs of",
        "Python per exchange server-side (option encoding, DhcpOptions/DhcpPacket construction,",
        "ipaddress objects, the SQLite statement); the rest of its ~0.4 ms CPU per exchange is",
        "asyncio's datagram path (queue wake-ups, one task switch per batch) and commits.",
        "dnsmasq's `failed` are exchanges with no reply within 1 s.",
        "",
        "Versions: " + "; ".join(f"{k} {v}" for k, v in meta.items()),
        "",
        "| server | concurrency | exchanges/s | exchanges | failed | p50 ms | p99 ms "
        "| server CPU s | exchanges per CPU-s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['server']} | {row['concurrency']} | {row['rate']} | {row['exchanges']} "
            f"| {row['failed']} | {row['p50_ms']} | {row['p99_ms']} | {row['server_cpu_s']} "
            f"| {row['exchanges_per_cpu_s']} |")
    (out / "dhcp.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--only", action="append", help="substring of server names to run")
    args = parser.parse_args()
    meta = versions()
    rows: list[dict[str, object]] = []
    for name, start in SERVERS.items():
        if args.only and not any(part in name for part in args.only):
            continue
        for concurrency in CONCURRENCY:
            try:
                row = run_one(name, start, concurrency, args.seconds)
            except Exception as exc:  # one broken incumbent must not lose the other rows
                row = {"server": name, "concurrency": concurrency, "rate": None,
                       "exchanges": 0, "failed": None, "p50_ms": None, "p99_ms": None,
                       "server_cpu_s": None, "exchanges_per_cpu_s": None,
                       "error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(row), flush=True)
            rows.append(row)
    write_results(rows, meta, args.seconds)


if __name__ == "__main__":
    main()
