"""The servers under test, each started in the storm's server namespace inside a cgroup of its
own (v1 cpuacct, or v2 cpu.stat: the CPU of every process it forks counts), and how they are
measured: CPU seconds from the cgroup, peak RSS sampled every 100 ms over the tree (sum of
VmRSS) and each process's own high-water mark (VmHWM) at the end.

- oneroot: `oneroot --home H serve --no-nfs`, as the README starts it; NFS is off because no
  simulated node mounts its root (the baseline serves no NFS either).
- baseline: dnsmasq with the dnsmasq.conf `oneroot render` wrote for the same inventory
  (DHCP + TFTP from the same boot dir), and nginx serving that boot dir at /boot/ on the same
  port, with a 200 for the stage reports. Both are given the limits a 1,000-node site sets
  (dnsmasq's default `tftp-max` is 50 transfers, nginx's 512 connections per worker).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from netns import ns_cmd

ONEROOT_ARGV = ("serve", "--no-nfs")


@dataclass(slots=True)
class Meter:
    """A CPU-accounting cgroup and an RSS sampler for one server's processes."""

    name: str
    cpu_path: Path = field(init=False)
    peak_rss: int = 0
    hwm: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        # cgroup v1's cpuacct where mounted (this machine), else the v2 unified hierarchy
        v1 = Path("/sys/fs/cgroup/cpuacct")
        base = v1 if (v1 / "cgroup.procs").exists() else Path("/sys/fs/cgroup")
        self.cpu_path = base / f"oneroot-storm-{self.name}-{os.getpid()}"
        self.cpu_path.mkdir(exist_ok=True)

    def wrap(self, argv: list[str]) -> list[str]:
        return ["sh", "-c", f'echo $$ > {self.cpu_path}/cgroup.procs && exec "$@"', "sh", *argv]

    def adopt(self, pid: int) -> None:
        """Move a running process and every process below it into this cgroup (a server
        started by other code: the lab's `oneroot serve` and its nfs-ganesha)."""
        for each in descendants(process_parents(), pid):
            with contextlib.suppress(ProcessLookupError, OSError):
                (self.cpu_path / "cgroup.procs").write_text(f"{each}\n")

    def pids(self) -> list[int]:
        return [int(p) for p in (self.cpu_path / "cgroup.procs").read_text().split()]

    def cpu_seconds(self) -> float:
        v1 = self.cpu_path / "cpuacct.usage"
        if v1.exists():
            return int(v1.read_text()) / 1e9
        usage = dict(line.split() for line in (self.cpu_path / "cpu.stat").read_text().splitlines())
        return int(usage["usage_usec"]) / 1e6

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds so far of the cgroup's live processes, summed by kind (`serve`, its
        `httpworker`s; `dnsmasq`, `nginx`)."""
        ticks = os.sysconf("SC_CLK_TCK")
        found: Counter[str] = Counter()
        for pid in self.pids():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            kind = ("httpworker" if b"oneroot.cli.httpworker" in argv else
                    "serve" if b"serve" in argv else os.path.basename(argv[0].decode()))
            found[kind] += (int(stat[11]) + int(stat[12])) / ticks  # utime, stime
        return dict(found)

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            total = 0
            for pid in self.pids():
                status = _status(pid)
                total += status.get("VmRSS", 0)
                self.hwm[pid] = max(self.hwm.get(pid, 0), status.get("VmHWM", 0))
            self.peak_rss = max(self.peak_rss, total)

    def start_sampling(self) -> None:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop_sampling(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def close(self) -> None:
        for _ in range(50):
            try:
                self.cpu_path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def parse_stat(text: str) -> tuple[str, int, int]:
    """/proc/PID/stat -> (comm, ppid, user+system clock ticks of all its threads). The
    command name is between the first `(` and the last `)`: it may hold spaces and parens."""
    comm = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    return comm, int(fields[1]), int(fields[11]) + int(fields[12])


def process_parents() -> dict[int, int]:
    """Every process's parent, pid -> ppid (processes gone while reading are left out)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError):
                parents[int(entry.name)] = parse_stat((entry / "stat").read_text())[1]
    return parents


def descendants(parents: dict[int, int], root: int) -> list[int]:
    """`root` and every process below it, parents before children."""
    children: dict[int, list[int]] = {}
    for pid, ppid in sorted(parents.items()):
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        out.append(pid)
        todo += children.get(pid, [])
    return out


def process_cpu_seconds(pid: int) -> float:
    """User+system CPU of one process (all its threads) so far; 0 if it is gone."""
    try:
        ticks = parse_stat(Path(f"/proc/{pid}/stat").read_text())[2]
    except (OSError, ValueError):
        return 0.0
    return ticks / os.sysconf("SC_CLK_TCK")


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes (empty if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


@dataclass(slots=True)
class Running:
    meter: Meter
    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]

    def check_alive(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def start_oneroot(ns: str, oneroot: Path, home: Path, work: Path,
                  extra: tuple[str, ...] = ()) -> Running:
    meter = Meter("oneroot")
    log = work / "oneroot-serve.log"
    proc = subprocess.Popen(meter.wrap(ns_cmd(ns, str(oneroot), "--home", str(home),
                                                     *ONEROOT_ARGV, *extra)),
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return Running(meter, [proc], [log])


def nginx_conf(work: Path, boot_dir: Path, listen: str) -> Path:
    temp = work / "nginx-tmp"
    temp.mkdir(exist_ok=True)
    conf = work / "nginx.conf"
    conf.write_text(f"""\
# the storm's baseline HTTP server: the boot dir at /boot/, a 200 for stage reports
user root;
worker_processes auto;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    types {{ text/plain ipxe; }}
    default_type application/octet-stream;
    server {{
        listen {listen} backlog=4096;
        location /boot/ {{ alias {boot_dir}/; }}
        location = /api/v1/report {{ return 200 "ok\\n"; }}
    }}
}}
""")
    return conf


def baseline_argvs(config_dir: Path, boot_dir: Path, work: Path, listen: str,
                   nodes: int) -> dict[str, list[str]]:
    """dnsmasq (with the dnsmasq.conf `oneroot render` wrote to `config_dir`) and nginx
    (`boot_dir` at /boot/ on `listen`), in the foreground, by name."""
    return {
        "dnsmasq": ["/usr/sbin/dnsmasq", f"--conf-file={config_dir / 'dnsmasq.conf'}",
                    "--keep-in-foreground", f"--dhcp-leasefile={work / 'dnsmasq.leases'}",
                    f"--pid-file={work / 'dnsmasq.pid'}", "--user=root",
                    f"--tftp-max={max(50, nodes + 24)}", f"--dhcp-lease-max={nodes + 1000}",
                    "--log-facility=-", "--quiet-dhcp", "--quiet-tftp"],
        "nginx": ["/usr/sbin/nginx", "-c", str(nginx_conf(work, boot_dir, listen)),
                  "-g", "daemon off;"],
    }


def start_baseline(ns: str, home: Path, boot_dir: Path, work: Path, listen: str,
                   nodes: int) -> Running:
    meter = Meter("baseline")
    procs, logs = [], []
    for name, argv in baseline_argvs(home / "config", boot_dir, work, listen, nodes).items():
        log = work / f"{name}.log"
        procs.append(subprocess.Popen(meter.wrap(ns_cmd(ns, *argv)), stdout=log.open("wb"),
                                      stderr=subprocess.STDOUT))
        logs.append(log)
    return Running(meter, procs, logs)


def wait_ready(ns: str, running: Running, http_port: int, timeout: float = 60) -> None:
    """DHCP (67), TFTP (69) and HTTP bound inside the namespace."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running.check_alive()
        udp = subprocess.run(ns_cmd(ns, "ss", "-Hlun"), capture_output=True, text=True).stdout
        tcp = subprocess.run(ns_cmd(ns, "ss", "-Hltn"), capture_output=True, text=True).stdout
        if ":67 " in udp and ":69 " in udp and f":{http_port} " in tcp:
            time.sleep(0.5)
            return
        time.sleep(0.2)
    raise RuntimeError("the server did not bind DHCP, TFTP and HTTP in time")


def version_of(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return ((done.stdout or done.stderr).strip().splitlines() or ["?"])[0]


class Profiler:
    """py-spy sampling a running `oneroot serve` and its HTTP workers (raw collapsed stacks),
    stopped with SIGINT."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
             "--rate", "100", "--format", "raw", "--output", str(out), "--nonblocking",
             "--subprocesses"],  # serve's HTTP workers too
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> dict[str, object]:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)
        return summarize_profile(self.out)


def summarize_profile(raw: Path, top: int = 20) -> dict[str, object]:
    """Shares of the samples: by innermost frame (self), and by function anywhere on the
    stack (inclusive), for the functions with the largest shares."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_short(frame) for frame in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            anywhere[frame] += int(count)

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(n / total, 3)) for name, n in counter.most_common(top)]

    return {"samples": total, "self": shares(own), "inclusive": shares(anywhere)}


def _short(frame: str) -> str:
    """`send (socket.py:123)` -> `send (socket.py)`: one row per function, not per line."""
    return re.sub(r":\d+\)$", ")", frame.replace(str(Path(sys.prefix)), ""))
