"""TFTP benchmark: aggregate MB/s and MB per server CPU-second for a 32 MiB file, at 1/8/32
concurrent clients, blksize 512/1468/8192, windowsize 1/16, against oneroot, tftpd-hpa and
atftpd, all on 127.0.0.1 (loopback only).

Client: atftp (C, one process per download, to /dev/null): the one installed client that
negotiates windowsize (RFC 7440); curl has no windowsize and tftp-hpa's client no options.
tftpd-hpa 5.2 does not implement windowsize, so its "windowsize 16" rows run at window 1.
Server CPU: a cgroup (v1 cpuacct, or v2 cpu.stat) made for the server, so the children
tftpd-hpa forks per client count even after they exit (tftpd-hpa ignores SIGCHLD, so their
time never reaches its cutime); /proc/<pid>/stat of the process and live children otherwise.
atftpd is not installable beside tftpd-hpa, so it is taken with `apt-get download atftpd`
and `dpkg-deb -x` into a cache directory and run from there.

    .venv/bin/python bench/tftp/bench_tftp.py [--quick] [--servers oneroot,tftpd-hpa,atftpd]
Writes bench/results/tftp.md and tftp.json. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
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

FULL = {"clients": (1, 8, 32), "blksize": (512, 1468, 8192), "windowsize": (1, 16)}
QUICK = {"clients": (1, 8, 32), "blksize": (1468,), "windowsize": (1, 16)}


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


def start_server(name: str, root: Path, port: int, log: Path, meter: CpuMeter
                 ) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    if name == "oneroot":
        argv = [sys.executable, str(HERE / "run_oneroot.py"), "--root", str(root),
                "--port", str(port), "--max-blksize", "8192"]
    elif name == "tftpd-hpa":
        argv = ["/usr/sbin/in.tftpd", "-L", "-s", str(root), "-a", f"{HOST}:{port}"]
    elif name == "atftpd":
        argv = [str(atftpd_binary()), "--daemon", "--no-fork", "--port", str(port),
                "--bind-address", HOST, "--maxthread", "128", "--logfile", "/dev/null",
                str(root)]
    else:
        raise ValueError(name)
    proc = subprocess.Popen(meter.wrap(argv), stdout=out, stderr=subprocess.STDOUT)
    meter.pid = proc.pid
    time.sleep(0.5)
    if proc.poll() is not None:
        raise RuntimeError(f"{name} exited at start: {log.read_text()}")
    return proc


def version(name: str) -> str:
    if name == "oneroot":
        from importlib.metadata import version as dist_version
        return f"oneroot {dist_version('oneroot')} (Python {platform.python_version()})"
    if name == "tftpd-hpa":
        out = subprocess.run(["/usr/sbin/in.tftpd", "-V"], capture_output=True, text=True)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    out = subprocess.run(["dpkg-deb", "-f", str(next(CACHE.glob("atftpd_*.deb"))), "Version"],
                         capture_output=True, text=True)
    return f"atftpd {out.stdout.strip()} (Debian package, extracted)"


def run_case(server: str, meter: CpuMeter, port: int, clients: int, blksize: int,
             windowsize: int, timeout: float) -> Row:
    argv = ["atftp", "--option", f"blksize {blksize}", "--option", f"windowsize {windowsize}",
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


def write_results(rows: list[Row], versions: dict[str, str], command: str, quick: bool) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tftp.json").write_text(json.dumps(
        {"command": command, "versions": versions, "file_size": FILE_SIZE,
         "cpus": os.cpu_count(), "kernel": platform.release(),
         "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    lines = [
        "# TFTP: aggregate throughput and server CPU, 32 MiB file, loopback",
        "",
        f"Produced by `{command}`" + (" (reduced matrix)" if quick else "") + ".",
        "Client: atftp 0.8.0 (C), N concurrent processes, each downloading the file to",
        "/dev/null; clients and server share the machine's CPUs, so rates are a floor.",
        "MB = 10^6 bytes; MB/s counts completed downloads only. Server CPU: a cgroup holding",
        "the server and every child it forks (tftpd-hpa forks a process per transfer).",
        "tftpd-hpa 5.2 has no windowsize: its windowsize-16 rows run at window 1.",
        "",
        "Versions: " + "; ".join(versions.values())
        + f"; kernel {platform.release()}; cpus {os.cpu_count()}",
        "",
        "| server | clients | blksize | windowsize | ok | failed | seconds | MB/s | server CPU s "
        "| MB per CPU-s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r.server} | {r.clients} | {r.blksize} | {r.windowsize} | {r.ok} | "
                     f"{r.failed} | {r.seconds} | {r.mb_per_s} | {r.server_cpu_s} | "
                     f"{r.mb_per_cpu_s} |")
    (RESULTS / "tftp.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="blksize 1468 only")
    parser.add_argument("--servers", default="oneroot,tftpd-hpa,atftpd")
    parser.add_argument("--clients", default=None, help="comma list, e.g. 1,8")
    parser.add_argument("--timeout", type=float, default=180.0, help="per case, seconds")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--merge", action="store_true",
                        help="keep other servers' rows from the existing tftp.json")
    args = parser.parse_args()
    matrix = dict(QUICK if args.quick else FULL)
    if args.clients:
        matrix["clients"] = tuple(int(c) for c in args.clients.split(","))
    servers = args.servers.split(",")
    if shutil.which("atftp") is None:
        sys.exit("atftp (the client) is not installed")
    rows: list[Row] = []
    versions: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="oneroot-tftp-bench-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        os.chmod(tmp, 0o755)
        (root / "file.bin").write_bytes(os.urandom(FILE_SIZE))
        os.chmod(root / "file.bin", 0o644)
        for server in servers:
            port = free_port(HOST, udp=True)
            meter = CpuMeter(server)
            proc = start_server(server, root, port, Path(tmp) / f"{server}.log", meter)
            versions[server] = version(server)
            try:
                for windowsize in matrix["windowsize"]:
                    for blksize in matrix["blksize"]:
                        for clients in matrix["clients"]:
                            row = run_case(server, meter, port, clients, blksize,
                                           windowsize, args.timeout)
                            rows.append(row)
                            print(json.dumps(asdict(row)), flush=True)
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                meter.close()
    command = ".venv/bin/python bench/tftp/bench_tftp.py " + " ".join(sys.argv[1:])
    if args.merge and (RESULTS / "tftp.json").exists():
        old = json.loads((RESULTS / "tftp.json").read_text())
        kept = [Row(**r) for r in old["rows"] if r["server"] not in servers]
        rows = [r for r in rows if r.server in servers] + kept
        versions = {**old["versions"], **versions}
        command = f"{old['command']}; then {command}"
    if not args.no_write:
        write_results(rows, versions, command.strip(), args.quick)


if __name__ == "__main__":
    main()
