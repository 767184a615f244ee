"""TFTP benchmark: single-file download rate and server CPU for a 32 MiB file, oneroot against
tftpd-hpa (and atftpd if asked) in the same run, on 127.0.0.1 (loopback only).

oneroot runs as a user runs it: `oneroot init` (server 127.0.0.1 on `lo`, the file in its boot
dir), then `oneroot serve --no-dhcp --no-http --no-nfs`, with its own defaults (blksize capped
by the interface's MTU, per-client session cap, timeout clamp) and its default log level.
Every server is started once; the repetitions then take turns (oneroot, tftpd-hpa, oneroot...)
so that load from other jobs on this shared machine falls on all of them alike, and medians
are reported.

Client: atftp (C, one process per download, to /dev/null). Server CPU: a cgroup (v1 cpuacct,
or v2 cpu.stat) made for the server, so the children tftpd-hpa forks per client count even
after they exit; /proc/<pid>/stat of the process and live children otherwise. atftpd is not
installable beside tftpd-hpa, so it is taken with `apt-get download atftpd` and `dpkg-deb -x`
into a cache directory and run from there.

    .venv/bin/python bench/tftp/bench_tftp.py [--repeat 7] [--clients 1] [--blksize 1468]
        [--windowsize 1] [--servers oneroot,tftpd-hpa] [--profile FILE]
Writes bench/results/tftp.md and tftp.json. Not run in CI. `--profile FILE` runs oneroot
under cProfile (slower: for where the time goes, not for the figures) and writes no results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from oneroot.testing.ports import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = REPO / "bench" / "results"
CACHE = Path(os.environ.get("ONEROOT_BENCH_CACHE", "/tmp/oneroot-bench-cache"))
TICKS = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"
FILE_SIZE = 32 * 1024 * 1024
MB = 1e6
ONEROOT = Path(sys.executable).parent / "oneroot"  # the console script users run
# oneroot with one setting changed, measured beside the default in the same run
ONEROOT_VARIANTS = {"oneroot": [],
                    "oneroot-loop": ["--limit", "tftp_lockstep_threads=0"]}


@dataclass
class Row:
    server: str
    clients: int
    blksize: int
    windowsize: int
    ok: int
    failed: int
    seconds: float
    mb_per_s: float
    server_cpu_s: float
    mb_per_cpu_s: float


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and int(fields[1]) == pid:  # ppid
                out.append(int(entry))
    return out


def cpu_seconds(pid: int) -> float:
    """CPU of `pid`, its reaped children, and its live descendants."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    total = sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICKS  # utime stime cutime cstime
    for child in _children(pid):
        total += cpu_seconds(child)
    return total


class CpuMeter:
    """CPU seconds of a server and all its descendants, dead or alive."""

    def __init__(self, name: str) -> None:
        self.path: Path | None = None
        for base, stat_file in ((Path("/sys/fs/cgroup/cpuacct"), "cpuacct.usage"),
                                (Path("/sys/fs/cgroup"), "cpu.stat")):
            if (base / "cgroup.procs").exists():
                path = base / f"oneroot-bench-{name}-{os.getpid()}"
                try:
                    path.mkdir(exist_ok=True)
                except OSError:
                    continue
                self.path, self._stat_file = path, stat_file
                break
        self.pid = 0

    def wrap(self, argv: list[str]) -> list[str]:
        """Start `argv` inside the cgroup, so every child it forks is counted too."""
        if self.path is None:
            return argv
        return ["sh", "-c", f'echo $$ > {self.path}/cgroup.procs && exec "$@"', "sh", *argv]

    def seconds(self) -> float:
        if self.path is None:
            return cpu_seconds(self.pid)
        text = (self.path / self._stat_file).read_text()
        if self._stat_file == "cpuacct.usage":
            return int(text) / 1e9
        usage = dict(line.split() for line in text.splitlines())
        return int(usage["usage_usec"]) / 1e6

    def close(self) -> None:
        if self.path is not None:
            for _ in range(50):
                try:
                    self.path.rmdir()
                    return
                except OSError:
                    time.sleep(0.1)


def atftpd_binary() -> Path:
    binary = CACHE / "x" / "usr" / "sbin" / "atftpd"
    if not binary.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "atftpd"], cwd=CACHE, check=True,
                       capture_output=True)
        deb = next(CACHE.glob("atftpd_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(CACHE / "x")], check=True)
    return binary


def oneroot_argv(root: Path, port: int, home: Path) -> list[str]:
    """`oneroot init` once (the file is in its boot dir), then the `oneroot serve` command."""
    subprocess.run([str(ONEROOT), "--home", str(home), "init", "--server", HOST,
                    "--subnet", "127.0.0.0/8", "--interface", "lo", "--image-root", str(root),
                    "--boot-dir", str(root), "--state-dir", str(home / "state")],
                   check=True, capture_output=True)
    return [str(ONEROOT), "--home", str(home), "serve", "--no-dhcp", "--no-http", "--no-nfs",
            "--tftp-port", str(port)]


def start_server(name: str, root: Path, port: int, log: Path, meter: CpuMeter,
                 profile: Path | None = None) -> subprocess.Popen[bytes]:
    if name in ONEROOT_VARIANTS:
        argv = oneroot_argv(root, port, log.parent / f"{name}-home") + ONEROOT_VARIANTS[name]
        if profile is not None:
            argv[:1] = [sys.executable, "-m", "cProfile", "-o", str(profile), str(ONEROOT)]
    elif name == "tftpd-hpa":
        argv = ["/usr/sbin/in.tftpd", "-L", "-s", str(root), "-a", f"{HOST}:{port}"]
    elif name == "atftpd":
        argv = [str(atftpd_binary()), "--daemon", "--no-fork", "--port", str(port),
                "--bind-address", HOST, "--maxthread", "128", "--logfile", "/dev/null",
                str(root)]
    else:
        raise ValueError(name)
    with log.open("wb") as out:
        proc = subprocess.Popen(meter.wrap(argv), stdout=out, stderr=subprocess.STDOUT)
    meter.pid = proc.pid
    deadline = time.monotonic() + 30
    while name in ONEROOT_VARIANTS and "serve.started" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"oneroot serve did not start: {log.read_text()}")
        time.sleep(0.1)
    time.sleep(0.5)
    if proc.poll() is not None:
        raise RuntimeError(f"{name} exited at start: {log.read_text()}")
    return proc


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def version(name: str) -> str:
    if name in ONEROOT_VARIANTS:
        from importlib.metadata import version as dist_version
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        return (f"oneroot {dist_version('oneroot')} at {commit or '?'} "
                f"(Python {platform.python_version()})")
    if name == "tftpd-hpa":
        out = subprocess.run(["/usr/sbin/in.tftpd", "-V"], capture_output=True, text=True)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    out = subprocess.run(["dpkg-deb", "-f", str(next(CACHE.glob("atftpd_*.deb"))), "Version"],
                         capture_output=True, text=True)
    return f"atftpd {out.stdout.strip()} (Debian package, extracted)"


def run_case(server: str, meter: CpuMeter, port: int, clients: int, blksize: int,
             windowsize: int, timeout: float) -> Row:
    window = ["--option", f"windowsize {windowsize}"] if windowsize > 1 else []  # as a ROM asks
    argv = ["atftp", "--option", f"blksize {blksize}", *window,
            "-g", "-r", "file.bin", "-l", "/dev/null", HOST, str(port)]
    cpu0 = meter.seconds()
    start = time.monotonic()
    procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(clients)]
    ok = failed = 0
    for proc in procs:
        remaining = max(0.1, timeout - (time.monotonic() - start))
        try:
            rc = proc.wait(remaining)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = -1
        ok, failed = (ok + 1, failed) if rc == 0 else (ok, failed + 1)
    seconds = time.monotonic() - start
    time.sleep(0.3)  # let a forking server reap its children into cutime
    cpu = meter.seconds() - cpu0
    megabytes = ok * FILE_SIZE / MB
    return Row(server, clients, blksize, windowsize, ok, failed, round(seconds, 3),
               round(megabytes / seconds, 1), round(cpu, 2),
               round(megabytes / cpu, 1) if cpu > 0 else float("inf"))



def median_row(runs: list[Row]) -> Row:
    """The repetitions of one case summed up: failures added, every figure its median."""
    first = runs[0]
    return Row(first.server, first.clients, first.blksize, first.windowsize,
               sum(r.ok for r in runs), sum(r.failed for r in runs),
               round(statistics.median(r.seconds for r in runs), 3),
               round(statistics.median(r.mb_per_s for r in runs), 1),
               round(statistics.median(r.server_cpu_s for r in runs), 2),
               round(statistics.median(r.mb_per_cpu_s for r in runs), 1))


def machine() -> dict[str, object]:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "cpu_model": model,
            "python": platform.python_version()}


def write_results(report: dict[str, object], medians: list[Row],
                  ratios: list[dict[str, object]]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tftp.json").write_text(json.dumps(report, indent=2) + "\n")
    mach, versions = report["machine"], report["versions"]
    assert isinstance(mach, dict) and isinstance(versions, dict)
    lines = [
        "# TFTP: oneroot serve against tftpd-hpa, 32 MiB file, loopback, same run",
        "",
        f"Produced by `{report['command']}` on {report['date']}.",
        f"Machine: kernel {mach['kernel']}, {mach['cpus']} CPUs ({mach['cpu_model']}), "
        f"shared with other jobs: load average {report['load_before']} before, "
        f"{report['load_after']} after.",
        "Versions: " + "; ".join(str(v) for v in versions.values()) + ".",
        f"oneroot: `{report['oneroot_command']}` (after `oneroot init`), as a user runs it.",
        "Client: atftp, one process per download to /dev/null; it shares the CPUs with the",
        f"server, so rates are a floor. {report['repeat']} repetitions per case, the servers",
        "taking turns; every figure is the median. MB = 10^6 bytes. Server CPU: a cgroup",
        "holding the server and every child it forks (tftpd-hpa forks one per transfer).",
        "oneroot runs a lock-step (windowsize 1) transfer's data phase in a thread of its own",
        "while it has at most `tftp_lockstep_threads` transfers (serve/tftp_lockstep.py): recv,",
        "the sans-IO machine, send, without the event loop's per-block wake-up; oneroot-loop",
        "(`--limit tftp_lockstep_threads=0`) runs it on the loop, as serve does in a storm.",
        "",
        "| server | clients | blksize | windowsize | ok | failed | seconds | MB/s | server CPU s "
        "| MB per CPU-s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in medians:
        lines.append(f"| {r.server} | {r.clients} | {r.blksize} | {r.windowsize} | {r.ok} | "
                     f"{r.failed} | {r.seconds} | {r.mb_per_s} | {r.server_cpu_s} | "
                     f"{r.mb_per_cpu_s} |")
    if ratios:
        lines += ["", "| case | oneroot / tftpd-hpa: of the median MB/s | median of the "
                  "per-repetition ratios | per-repetition MB/s oneroot ; tftpd-hpa |",
                  "|---|---:|---:|---|"]
        for ratio in ratios:
            lines.append(f"| {ratio['case']} | {ratio['ratio']}x | {ratio['paired_ratio']}x | "
                         f"{ratio['oneroot']} ; {ratio['tftpd-hpa']} |")
    (RESULTS / "tftp.md").write_text("\n".join(lines) + "\n")


def compare(rows: list[Row], medians: list[Row]) -> list[dict[str, object]]:
    """oneroot's median rate over tftpd-hpa's, for every case both ran."""
    out: list[dict[str, object]] = []
    for mine in (m for m in medians if m.server == "oneroot"):
        case = (mine.clients, mine.blksize, mine.windowsize)
        theirs = [m for m in medians if m.server == "tftpd-hpa"
                  and (m.clients, m.blksize, m.windowsize) == case]
        if not theirs or not theirs[0].mb_per_s:
            continue
        rates = {server: [r.mb_per_s for r in rows if r.server == server
                          and (r.clients, r.blksize, r.windowsize) == case]
                 for server in ("oneroot", "tftpd-hpa")}
        # Each repetition ran both servers back to back: their ratio is less moved by the
        # load of other jobs, which drifts over the run, than the ratio of the two medians.
        paired = [a / b for a, b in zip(rates["oneroot"], rates["tftpd-hpa"], strict=True) if b]
        out.append({
            "case": f"{case[0]} client(s), blksize {case[1]}, windowsize {case[2]}",
            "ratio": round(mine.mb_per_s / theirs[0].mb_per_s, 2),
            "paired_ratio": round(statistics.median(paired), 2) if paired else None,
            **rates,
        })
    return out


def run_all(args: argparse.Namespace, root: Path, tmp: Path
            ) -> tuple[list[Row], dict[str, str], list[str]]:
    servers = args.servers.split(",")
    cases = [(c, b, w) for w in _ints(args.windowsize) for b in _ints(args.blksize)
             for c in _ints(args.clients)]
    started: dict[str, tuple[subprocess.Popen[bytes], CpuMeter, int]] = {}
    versions: dict[str, str] = {}
    rows: list[Row] = []
    oneroot_command: list[str] = []
    try:
        for server in servers:
            port = free_port(HOST, udp=True)
            meter = CpuMeter(server)
            started[server] = (start_server(server, root, port, tmp / f"{server}.log", meter,
                                            args.profile), meter, port)
            versions[server] = version(server)
            if server == "oneroot":
                oneroot_command = ["oneroot", "serve", "--no-dhcp", "--no-http", "--no-nfs",
                                   "--tftp-port", str(port)]
        for _ in range(args.repeat):
            for clients, blksize, windowsize in cases:
                for server, (_proc, meter, port) in started.items():
                    row = run_case(server, meter, port, clients, blksize, windowsize,
                                   args.timeout)
                    rows.append(row)
                    print(json.dumps(asdict(row)), flush=True)
    finally:
        for proc, meter, _port in started.values():
            stop_server(proc)
            meter.close()
    return rows, versions, oneroot_command


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", default="oneroot,tftpd-hpa",
                        help="of oneroot,tftpd-hpa,atftpd")
    parser.add_argument("--clients", default="1", help="comma list, e.g. 1,8")
    parser.add_argument("--blksize", default="1468", help="comma list, e.g. 512,1468")
    parser.add_argument("--windowsize", default="1", help="comma list, e.g. 1,16")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=180.0, help="per case, seconds")
    parser.add_argument("--profile", type=Path, default=None,
                        help="run oneroot under cProfile into FILE; write no results")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if shutil.which("atftp") is None:
        sys.exit("atftp (the client) is not installed")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="oneroot-tftp-bench-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        os.chmod(tmp, 0o755)
        (root / "file.bin").write_bytes(os.urandom(FILE_SIZE))
        os.chmod(root / "file.bin", 0o644)
        rows, versions, oneroot_command = run_all(args, root, Path(tmp))
    client = subprocess.run(["atftp", "--version"], capture_output=True, text=True)
    versions["client"] = (client.stdout + client.stderr).strip()
    groups: dict[tuple[str, int, int, int], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.server, row.clients, row.blksize, row.windowsize), []).append(row)
    medians = [median_row(runs) for runs in groups.values()]
    ratios = compare(rows, medians)
    for ratio in ratios:
        print(f"{ratio['case']}: oneroot/tftpd-hpa = {ratio['ratio']}x "
              f"(paired: {ratio['paired_ratio']}x)", flush=True)
    if args.no_write or args.profile is not None:
        return
    report: dict[str, object] = {
        "command": ".venv/bin/python bench/tftp/bench_tftp.py " + " ".join(sys.argv[1:]),
        "oneroot_command": " ".join(oneroot_command),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(), "versions": versions, "file_size": FILE_SIZE,
        "repeat": args.repeat,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "medians": [asdict(r) for r in medians], "ratios": ratios,
        "rows": [asdict(r) for r in rows],
    }
    write_results(report, medians, ratios)


if __name__ == "__main__":
    main()
