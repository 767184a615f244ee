"""DHCP benchmark: full DORA exchanges per second of `oneroot serve`, Kea 2.2 (memfile) and
dnsmasq, in the same run, at concurrency 1, 8 and 32.

Each server runs as its users run it, in a network namespace this bench creates (a bridge
holding 10.1.0.1/16); the load generator (`loadgen.py`) runs in a second namespace on a veth
pair into that bridge. oneroot: `oneroot init` then `oneroot settings set discovery=true
pool_start=… pool_end=…`, then `oneroot serve --no-tftp --no-http --no-nfs` with its default
log level (info, to a file). Kea: memfile with persist=true (its CSV lease file, written
without fsync) and the INFO logging of Debian's packaged config, to a file. dnsmasq: a range
and a lease file. All three hand out the same discovery pool.

Each case is `--exchanges` (3,000) full DORA exchanges from MACs no server has seen (a fresh
MAC block per case), the broadcast flag set. A round starts every server once and runs the
three concurrencies against it; rounds interleave the servers so load from other jobs on this
shared machine falls on all of them alike; each row is the median of `--rounds` rounds, and
the ratios are taken against Kea in the same round.

    .venv/bin/python bench/dhcp/bench_dhcp.py [--rounds 3] [--exchanges 3000] [--seconds 60]
                                              [--only NAME]
`--seconds` caps each case (a slow server, dnsmasq, stops there short of `--exchanges`).
Writes bench/results/dhcp.md and dhcp.json. Needs root. Not run in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import pstats
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from oneroot.testing.netns import Link, linked_namespaces

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = ROOT / "bench" / "results"
ONEROOT = Path(sys.executable).parent / "oneroot"  # the console script users run
CONCURRENCY = (1, 8, 32)
TICKS = os.sysconf("SC_CLK_TCK")
SERVER_CIDR = "10.1.0.1/16"
POOL = ("10.1.0.10", "10.1.255.250")
MAC_BLOCK = 100_000  # MAC indexes per case: every case asks with MACs never seen before

Starter = Callable[[Link, Path], subprocess.Popen[bytes]]


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (`ip netns exec` execs; oneroot may fork workers)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(stat[1])
    tree = [pid]
    for member in tree:
        tree += [child for child, parent in parents.items() if parent == member]
    return tree


def tree_cpu(pid: int) -> float:
    total = 0.0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(member)
    return total


def wait_bound(link: Link, proc: subprocess.Popen[bytes], port: int = 67) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        out = link.server.ns.run("ss", "-H", "-uln").stdout
        if f":{port} " in out or f":{port}\n" in out:
            time.sleep(0.5)
            return
        time.sleep(0.1)
    raise RuntimeError(f"server did not bind port {port}")


def oneroot_serve_argv(extra: tuple[str, ...]) -> list[str]:
    return ["oneroot", "--home", "HOME", "serve", "--no-tftp", "--no-http", "--no-nfs", *extra]


def start_oneroot(link: Link, work: Path, extra: tuple[str, ...],
                  profile: Path | None = None) -> subprocess.Popen[bytes]:
    home = work / "home"
    setup = [
        ["init", "--server", SERVER_CIDR.split("/")[0], "--subnet", "10.1.0.0/16",
         "--interface", link.server.interface, "--image-root", str(work),
         "--state-dir", str(work / "state"), "--boot-dir", str(work / "boot"),
         "--nfs-server", "ganesha"],
        ["settings", "set", "discovery=true", f"pool_start={POOL[0]}", f"pool_end={POOL[1]}",
         "gateway=10.1.0.1", "dns=10.1.0.1"],
    ]
    for argv in setup:
        subprocess.run([str(ONEROOT), "--home", str(home), *argv], check=True,
                       capture_output=True)
    serve = [str(ONEROOT) if part == "oneroot" else str(home) if part == "HOME" else part
             for part in oneroot_serve_argv(extra)]
    if profile is not None:
        serve[:1] = [sys.executable, "-m", "cProfile", "-o", str(profile), str(ONEROOT)]
    return subprocess.Popen(link.server.cmd(*serve), stdout=subprocess.DEVNULL,
                            stderr=(work / "server.log").open("wb"))


def start_kea(link: Link, work: Path) -> subprocess.Popen[bytes]:
    config = {"Dhcp4": {
        "interfaces-config": {"interfaces": [link.server.interface], "dhcp-socket-type": "raw"},
        "lease-database": {"type": "memfile", "persist": True, "lfc-interval": 3600,
                           "name": str(work / "kea-leases4.csv")},
        "valid-lifetime": 86400,
        "subnet4": [{"id": 1, "subnet": "10.1.0.0/16",
                     "pools": [{"pool": f"{POOL[0]} - {POOL[1]}"}],
                     "option-data": [{"name": "routers", "data": "10.1.0.1"},
                                     {"name": "domain-name-servers", "data": "10.1.0.1"}]}],
        # Debian's packaged kea-dhcp4.conf: INFO, to a file
        "loggers": [{"name": "kea-dhcp4", "severity": "INFO",
                     "output_options": [{"output": str(work / "kea.log")}]}],
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
        f"--dhcp-range={POOL[0]},{POOL[1]},255.255.0.0,24h", "--dhcp-authoritative",
        f"--dhcp-leasefile={work / 'dnsmasq.leases'}", "--dhcp-lease-max=100000",
        "--no-ping", "--user=root", f"--pid-file={work / 'dnsmasq.pid'}",
        "--dhcp-option=3,10.1.0.1", "--dhcp-option=6,10.1.0.1"),
        stdout=subprocess.DEVNULL, stderr=(work / "server.log").open("wb"))


def _oneroot(*extra: str) -> Starter:
    return lambda link, work: start_oneroot(link, work, extra)


SERVERS: dict[str, Starter] = {
    "oneroot serve": _oneroot(),
    "oneroot serve --lease-sync full": _oneroot("--lease-sync", "full"),
    "kea-dhcp4 memfile": start_kea,
    "dnsmasq": start_dnsmasq,
}
COMMANDS = {
    "oneroot serve": " ".join(oneroot_serve_argv(())) + " (leases written to the OS before "
                     "the ACK, not fsynced: as Kea's memfile)",
    "oneroot serve --lease-sync full": " ".join(oneroot_serve_argv(("--lease-sync", "full")))
                                       + " (each group commit fsynced before its ACKs)",
    "kea-dhcp4 memfile": "kea-dhcp4 -c kea.json (memfile persist=true, raw sockets, INFO log "
                         "to a file)",
    "dnsmasq": "dnsmasq --dhcp-range=10.1.0.10,10.1.255.250,255.255.0.0,24h --port=0 "
               "--no-ping --dhcp-leasefile=… (default logging)",
}


def run_server(name: str, start: Starter, round_index: int, exchanges: int,
               seconds: int = 60) -> list[dict[str, object]]:
    """Start `name` once and run every concurrency against it."""
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="dhcpbench-") as tmp, \
            linked_namespaces(SERVER_CIDR) as link:
        work = Path(tmp)
        os.chmod(tmp, 0o755)
        proc = start(link, work)
        try:
            wait_bound(link, proc)
            for case, concurrency in enumerate(CONCURRENCY):
                base = (round_index * len(CONCURRENCY) + case + 1) * MAC_BLOCK
                cpu_before = tree_cpu(proc.pid)
                load_1m = round(os.getloadavg()[0], 1)  # the other jobs on this machine
                result = link.client.ns.run(
                    sys.executable, str(HERE / "loadgen.py"), "--interface",
                    link.client.interface, "--concurrency", str(concurrency), "--seconds",
                    str(seconds),
                    "--max-exchanges", str(exchanges), "--mac-base", str(base),
                    timeout=seconds + 60, check=False)
                cpu = tree_cpu(proc.pid) - cpu_before
                if result.returncode != 0:
                    raise RuntimeError(f"load generator failed: {result.stderr[-500:]}")
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}")
                row: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
                done = int(row["exchanges"])  # type: ignore[call-overload]
                row.update(server=name, round=round_index, load_1m=load_1m,
                           server_cpu_s=round(cpu, 3),
                           server_us_per_exchange=round(cpu / done * 1e6) if done else None)
                print(json.dumps(row), flush=True)
                rows.append(row)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    return rows


def versions() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        return (result.stdout or result.stderr).strip().splitlines()[0]

    from importlib.metadata import version

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    return {
        "oneroot": f"{version('oneroot')} (commit {commit}, Python "
                   f"{platform.python_version()})",
        "kea-dhcp4": first_line(["/usr/sbin/kea-dhcp4", "-V"]).replace("\n", " "),
        "dnsmasq": first_line(["/usr/sbin/dnsmasq", "-v"]),
    }


def machine() -> dict[str, object]:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "cpu_model": model}


def summarize(rows: list[dict[str, object]], names: list[str], rounds: int
              ) -> list[dict[str, object]]:
    """Per server and concurrency: medians over the rounds, and the median of the per-round
    ratios to Kea (same round, same concurrency)."""
    by_case = {(r["server"], r["concurrency"], r["round"]): r for r in rows}
    summary: list[dict[str, object]] = []
    for name in names:
        for concurrency in CONCURRENCY:
            mine = [by_case[name, concurrency, i] for i in range(rounds)
                    if (name, concurrency, i) in by_case]
            if not mine:
                continue
            ratios = [float(r["rate"]) / float(kea["rate"])  # type: ignore[arg-type]
                      for r in mine
                      if (kea := by_case.get(("kea-dhcp4 memfile", concurrency, r["round"])))
                      and float(kea["rate"])]  # type: ignore[arg-type]

            def median(key: str, rows: list[dict[str, object]] = mine) -> float | None:
                values = [float(r[key]) for r in rows if r.get(key) is not None]  # type: ignore[arg-type]
                return round(statistics.median(values), 2) if values else None

            summary.append({
                "server": name, "concurrency": concurrency, "rounds": len(mine),
                "rate": median("rate"), "rates": [r["rate"] for r in mine],
                "failed": sum(int(r["failed"]) for r in mine),  # type: ignore[call-overload]
                "p50_ms": median("p50_ms"), "p99_ms": median("p99_ms"),
                "server_us_per_exchange": median("server_us_per_exchange"),
                "loadgen_cpu_s": median("loadgen_cpu_s"),
                "ratio_to_kea": round(statistics.median(ratios), 2) if ratios else None,
                "loads": [r.get("load_1m") for r in mine],
            })
    return summary


def write_results(report: dict[str, object]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dhcp.json").write_text(json.dumps(report, indent=2) + "\n")
    mach, vers, commands = report["machine"], report["versions"], report["commands"]
    assert isinstance(mach, dict) and isinstance(vers, dict) and isinstance(commands, dict)
    lines = [
        "# DHCP: full DORA exchanges per second, oneroot serve against Kea and dnsmasq",
        "",
        f"Produced by `{report['command']}` on {report['date']} (root).",
        f"Machine: kernel {mach['kernel']}, {mach['cpus']} CPUs ({mach['cpu_model']}), shared "
        f"with other jobs: load average {report['load_before']} before, {report['load_after']} "
        "after.",
        "Versions: " + "; ".join(f"{k} {v}" for k, v in vers.items()) + ".",
        "",
        "Each server runs as its users run it, in a network namespace the bench creates; the",
        "load generator (`bench/dhcp/loadgen.py`, Python, one process) runs in another, on a",
        "veth pair into the server's bridge. Per case: "
        f"{report['exchanges']} full DORA exchanges (DISCOVER → OFFER → REQUEST → ACK) from MACs",
        "no server has seen, discovery pool 10.1.0.10–10.1.255.250, broadcast replies. Each row",
        f"is the median of {report['rounds']} rounds (servers interleaved); *vs Kea* is the median",
        "of the per-round ratios to Kea at the same concurrency. The generator shares the 2",
        "CPUs with the server, so every rate is a floor; *server µs/exchange* (server CPU over",
        "exchanges) is the figure least disturbed by it.",
        "",
        "Commands:",
        *[f"- {name}: `{command}`" for name, command in commands.items()],
        "",
        "| server | concurrency | exchanges/s | vs Kea | failed | p50 ms | p99 ms "
        "| server µs/exchange | rates (each round) | load average (each round) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    summary = report["summary"]
    assert isinstance(summary, list)
    for row in summary:
        rates = ", ".join(f"{rate:g}" for rate in row["rates"])
        loads = ", ".join(f"{load:g}" for load in row["loads"] if load is not None)
        lines.append(
            f"| {row['server']} | {row['concurrency']} | {row['rate']} | {row['ratio_to_kea']}× "
            f"| {row['failed']} | {row['p50_ms']} | {row['p99_ms']} "
            f"| {row['server_us_per_exchange']} | {rates} | {loads} |")
    notes = report.get("notes")
    if isinstance(notes, list) and notes:
        lines += ["", *notes]
    (RESULTS / "dhcp.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--exchanges", type=int, default=3000)
    parser.add_argument("--seconds", type=int, default=60, help="cap per case")
    parser.add_argument("--only", action="append", help="substring of server names to run")
    parser.add_argument("--no-write", action="store_true", help="print rows, write nothing")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="run only oneroot serve, under cProfile (stats to FILE; slower: "
                             "for where the time goes, not for the figures); write no results")
    args = parser.parse_args()
    if args.profile is not None:
        run_server("oneroot serve (cProfile)",
                   lambda link, work: start_oneroot(link, work, (), args.profile.resolve()),
                   0, args.exchanges)
        pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(40)
        return
    names = [name for name in SERVERS if not args.only or any(p in name for p in args.only)]
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows: list[dict[str, object]] = []
    for round_index in range(args.rounds):
        for name in names:
            try:
                rows += run_server(name, SERVERS[name], round_index, args.exchanges,
                                   args.seconds)
            except Exception as exc:  # one broken server must not lose the other rows
                print(f"{name} round {round_index}: {type(exc).__name__}: {exc}", flush=True)
    summary = summarize(rows, names, args.rounds)
    for row in summary:
        print(json.dumps(row))
    if args.no_write:
        return
    write_results({
        "command": shlex.join([".venv/bin/python", "bench/dhcp/bench_dhcp.py",
                               *sys.argv[1:]]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(), "versions": versions(), "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "rounds": args.rounds, "exchanges": args.exchanges,
        "commands": {name: COMMANDS[name] for name in names},
        "summary": summary, "rows": rows,
    })


if __name__ == "__main__":
    main()
