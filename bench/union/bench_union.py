"""Union-root benchmark (issue 5), in a lab namespace with QEMU nodes (TCG, -smp 1 each):

  boot   time from QEMU start (power-on) to the node's target (the probe unit, ordered after
         basic.target and oneroot-booted, prints on the serial console; the host timestamps
         the line), 1 node and 2 nodes at once, served by `oneroot serve` (DHCP, TFTP, HTTP)
         vs a dnsmasq baseline (DHCP + TFTP: the iPXE script, kernel and initramfs over TFTP)
         booting the same kernel, initramfs and root= — NFS from the same nfs-ganesha.
  union  inside the node: `find /usr | wc -l` and `cat` of the same 500 files under
         /usr/share, on the union root vs the image export mounted directly over NFS (plain
         NFS), for the tmpfs top (ephemeral node: kernel overlayfs) and the rw NFS top
         (fuse-overlayfs). Page cache dropped before each cold pass; a warm pass follows.

    flock /tmp/oneroot-qemu.lock .venv/bin/python bench/union/bench_union.py [--runs N]

Writes bench/results/union.md and union.json. Not run in CI (minutes of QEMU per row).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from oneroot.initramfs.kernel import default_cache_dir
from oneroot.lab.qemu import QemuVm
from oneroot.ops.lab import SERVER, LabCluster, node_mac
from oneroot.testing.labprobe import PROBE_LIB, install_probe

RESULTS = Path(__file__).resolve().parents[1] / "results"
BOOT_TIMEOUT = 600

# NFS RPCs by operation: "OP count execute_ms". `nfsops MOUNTPOINT` counts that mount's
# superblock only (the plain-NFS `find`); `nfsops ""` every NFS superblock once (the union's
# `find` reaches the image layer and the node's own layer). Mounts of one export (here the
# union's image layer and /mnt/plain) share one superblock, and /proc/self/mountstats repeats
# its counters under each of them: summing every entry counted each RPC once per mount. The
# superblock of a mount is its device number (field 3 of /proc/self/mountinfo, keyed by mount
# point, field 5).
NFSOPS = r"""nfsops() {
    mi=${MOUNTINFO:-/proc/self/mountinfo}
    awk -v mi="$mi" -v only="$1" 'FILENAME == mi {dev[$5] = $3; next}
         /^device /{nfs = ($0 ~ / with fstype nfs/) && !seen[dev[$5]]++ &&
                    (only == "" || dev[$5] == dev[only])}
         nfs && /^[ \t]+[A-Z_0-9]+: [0-9]/ {sub(":", "", $1); n[$1] += $2; t[$1] += $9}
         END {for (k in n) print k, n[k], t[k]}' "$mi" "${MOUNTSTATS:-/proc/self/mountstats}" |
      sort
  }"""

# Times in ms from the guest's monotonic clock (date +%s%N is wall time: fine, same guest).
PROBE = "#!/bin/bash\n" + PROBE_LIB + r"""say target=reached uptime=$(cut -d' ' -f1 /proc/uptime)
mode=$(cat /etc/oneroot-bench-mode 2>/dev/null || echo boot)
if [ "$mode" = union ]; then
  # Measure on a quiet node: after the boot's other start jobs (they read the root too).
  # Not `is-system-running --wait`: this probe's own job is one of the boot's.
  # SETTLE_TRIES: bench/knfsd lowers it (a job of the server VM's root never ends on a node).
  for _ in $(seq ${SETTLE_TRIES:-120}); do
    busy=$(systemctl list-jobs --no-legend 2>/dev/null |
           awk '$2 !~ /\.target$/ && $2 != "oneroot-probe.service" {print $2}' |
           paste -sd, -)
    [ -z "$busy" ] && break
    sleep 1
  done
  say settled=$(cut -d' ' -f1 /proc/uptime) busy=${busy:-none}
  ip4=$(ip -4 -o addr show dev eth0 | sed -n 's/.* inet \([0-9.]*\).*/\1/p')
  mkdir -p /mnt/plain
  mount -t nfs -o "ro,vers=4.2,addr=10.0.0.1,clientaddr=$ip4" "10.0.0.1:{image}" /mnt/plain
  say root_fstype=$(findmnt -n -o FSTYPE /)
  (cd /mnt/plain && find usr/share -type f -size -64k | sort | head -n 500) > /tmp/files
  ms() { echo $(( $(date +%s%N) / 1000000 )); }
""" + NFSOPS + r"""
  opsdiff() {  # BEFORE AFTER -> OP:count:ms,... (ops that ran, most first)
    awk 'NR == FNR {n[$1] = $2; t[$1] = $3; next}
         $2 > n[$1] {print $2 - n[$1], $1 ":" $2 - n[$1] ":" $3 - t[$1]}' "$1" "$2" |
      sort -rn | head -n 6 | cut -d' ' -f2 | paste -sd, -
  }
  FUSE_PID=$(fuse_pids | head -n 1)
  fusecpu() {  # CPU=ticks (1/100 s) of the fuse-overlayfs daemon; builtins only (no exec)
    CPU=0
    if [ -n "$FUSE_PID" ]; then read -r -a f < "/proc/$FUSE_PID/stat"; CPU=$((f[13] + f[14])); fi
  }
  run() {  # run WHERE PASS
    base=$1
    case $2 in cold*) sync; echo 3 > /proc/sys/vm/drop_caches ;; esac
    nfsops "$base" > /tmp/ops0; fusecpu; c0=$CPU
    t0=$(ms); n=$(find "$base/usr" | wc -l); t1=$(ms)
    fusecpu; c1=$CPU; nfsops "$base" > /tmp/ops1
    t2=$(ms)  # CAT500=0: no `cat` (bench/knfsd: 13 s a pass on its server VM)
    [ "${CAT500:-1}" = 1 ] && (cd "$base/" && xargs cat < /tmp/files > /dev/null); t3=$(ms)
    say where=$3 pass=$2 find_ms=$((t1 - t0)) find_n=$n cat500_ms=$((t3 - t2)) \
      find_fuse_cpu_ms=$(( (c1 - c0) * 10 )) find_rpcs=$(opsdiff /tmp/ops0 /tmp/ops1)
  }
  # PASSES: a `cold*` one drops the page cache first (bench/knfsd repeats the cold pass).
  for pass in ${PASSES:-cold warm}; do
    run /mnt/plain $pass plain
    run "" $pass union
  done
  umount /mnt/plain
fi
say DONE
# A node that mounted an extra NFS export hung in systemd-shutdown after the final SIGKILL
# (not diagnosed; the e2e nodes, which mount nothing extra, power off cleanly). The bench
# needs no clean shutdown: sync, then power off at once.
sync
systemctl poweroff -ff
"""

DNSMASQ_CONF = """port=0
interface={bridge}
bind-interfaces
dhcp-range={server},static,255.255.255.0
dhcp-authoritative
enable-tftp
tftp-root={tftp_root}
dhcp-option=encap:175,176,1
log-dhcp
{hosts}
"""


# The union rows: top layer, ephemeral (tmpfs top), extra kernel arguments.
TOPS = (
    ("tmpfs", True, ""),
    ("fuse", False, ""),  # the initramfs's default options (fast_ino=1)
    ("fuse+fast_ino=0", False, "oneroot.fuse.opts=fast_ino=0"),  # fuse-overlayfs's default
    ("fuse+static_nlink", False, "oneroot.fuse.opts=static_nlink"),
    ("fuse+noacl", False, "oneroot.fuse.opts=noacl"),
)


def wait_probe_done(vm: QemuVm, timeout: float) -> float:
    """Wait for the probe's target line and its end; return seconds from power-on to target.
    On a failure the VM's last console lines are printed before the error goes on."""
    try:
        vm.wait_for(r"PROBE target=reached", timeout=timeout)
        target_s = vm.elapsed()
        vm.wait_for(r"PROBE DONE", timeout=timeout)
    except Exception:
        print(vm.serial_text()[-4000:])
        raise
    return target_s


def probe_lines(text: str) -> list[dict[str, str]]:
    return [dict(re.findall(r"(\w+)=(\S+)", line)) for line in re.findall(r"PROBE (.*)", text)]


class Bench:
    def __init__(self, workdir: Path, nodes: int = 2) -> None:
        self.c = LabCluster(workdir=workdir, cache_dir=default_cache_dir(),
                            progress=lambda m: print(f"  {m}", flush=True))
        self.nodes = [f"node{i:02d}" for i in range(1, nodes + 1)]
        self.dnsmasq: subprocess.Popen[bytes] | None = None

    def prepare(self) -> None:
        """The lab's files and nodes (those a kept --workdir lacks), then this bench's probe."""
        c = self.c
        c.prepare()
        known = c.oneroot("node", "list").stdout
        missing = [n for n in self.nodes if not re.search(rf"\b{n}\b", known)]
        if missing:
            c.add_nodes(len(missing), first=int(missing[0].removeprefix("node")))
        c.oneroot("nfs", "apply")  # the node layers the probes go into
        self.install_probes()

    def install_probes(self) -> None:
        image = self.c.workdir / "images" / self.c.image_name
        for node in self.nodes:
            install_probe(self.c, node, PROBE.replace("{image}", str(image)))

    def set_mode(self, mode: str, *, ephemeral: bool, kernel_args: str = "") -> None:
        image = self.c.workdir / "images" / self.c.image_name
        (image / "etc/oneroot-bench-mode").write_text(mode + "\n")
        for node in self.nodes:
            self.c.oneroot("node", "set", node, "--set",
                           f"ephemeral={'true' if ephemeral else 'false'}")
            if kernel_args:
                self.c.oneroot("node", "set", node, "--set", f"kernel_args={kernel_args}")
            else:
                self.c.oneroot("node", "set", node, "--unset", "kernel_args", check=False)

    # -- servers ---------------------------------------------------------------------------
    def start_oneroot(self) -> None:
        self.c.start()

    def start_baseline(self) -> None:
        """ganesha + HTTP (for the stage reports) from `oneroot serve`; DHCP/TFTP: dnsmasq."""
        c = self.c
        c.start(serve_args=("--no-dhcp", "--no-tftp"))
        assert c.lab is not None
        tftp = c.workdir / "tftp"
        tftp.mkdir(exist_ok=True)
        for name in ("vmlinuz", "initramfs.img"):
            target = tftp / name
            if not target.exists():
                target.hardlink_to(c.boot_dir / name)
        hosts = []
        rendered = c.workdir / "rendered"  # serve renders per-node files on the fly
        c.oneroot("render", "--out", str(rendered))
        for i, node in enumerate(self.nodes, start=1):
            script = (rendered / f"{node}.ipxe").read_text()
            kernel = re.search(r"^kernel\s+(\S+)\s*(.*)$", script, re.M)
            assert kernel, script
            args = re.sub(r"initrd=\S+", "initrd=initramfs.img",
                          kernel.group(2).split(" || ")[0])
            (tftp / f"{node}.ipxe").write_text(
                "#!ipxe\n"
                f"kernel tftp://{SERVER}/vmlinuz {args}\n"
                f"initrd tftp://{SERVER}/initramfs.img\n"
                "boot\n")
            hosts.append(f"dhcp-host={node_mac(i)},{SERVER + 10 + i},{node},set:{node}\n"
                         f"dhcp-boot=tag:{node},{node}.ipxe")
        conf = c.workdir / "dnsmasq.conf"
        conf.write_text(DNSMASQ_CONF.format(bridge=c.lab.bridge, server=SERVER,
                                            tftp_root=tftp, hosts="\n".join(hosts)))
        self.dnsmasq = c.lab.popen_in_ns(
            ["dnsmasq", "-k", f"--conf-file={conf}", "--log-facility=-",
             f"--pid-file={c.workdir}/dnsmasq.pid"], what="dnsmasq",
            stdout=(c.workdir / "dnsmasq.log").open("ab"), stderr=subprocess.STDOUT)
        time.sleep(1)

    def stop(self) -> None:
        if self.dnsmasq is not None and self.c.lab is not None:
            self.c.lab.stop_process(self.dnsmasq, timeout=5)
            self.dnsmasq = None
        self.c.stop()

    # -- runs ------------------------------------------------------------------------------
    def boot(self, nodes: list[str]) -> dict[str, dict[str, Any]]:
        c = self.c
        for node in nodes:
            c.boot(node)
        return wait_booted({node: c.vms[node] for node in nodes})


def wait_booted(vms: Mapping[str, QemuVm]) -> dict[str, dict[str, Any]]:
    """Each VM's probe lines and its seconds from power-on to its target, waited for
    together: a VM's time is read when its own console shows the target (waited for one
    after another, a VM that got there first would be timed when the one before it was)."""
    with ThreadPoolExecutor(max_workers=max(1, len(vms))) as pool:
        waits = {name: pool.submit(_wait_booted, name, vm) for name, vm in vms.items()}
        return {name: wait.result() for name, wait in waits.items()}


def _wait_booted(name: str, vm: QemuVm) -> dict[str, Any]:
    target_s = wait_probe_done(vm, BOOT_TIMEOUT)
    print(f"    {name}: target at {target_s:.1f} s after power-on", flush=True)
    if not vm.wait_powered_off(timeout=120):
        print(f"    {name}: guest shut down, QEMU hung after it (stopped)")
    lines = probe_lines(vm.serial_text())
    return {"target_s": round(target_s, 1), "uptime_s": float(lines[0]["uptime"]),
            "lines": lines}


RPC_COUNTING = ("per mount: plain NFS counts its own mount's superblock, the union every "
                "NFS superblock once")


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    return {"cpus": os.cpu_count(), "cpu_model": model, "load_average": os.getloadavg()}


def versions() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        return ((done.stdout or done.stderr).strip().splitlines() or ["?"])[0]

    commit = first_line(["git", "-C", str(RESULTS.parent.parent), "rev-parse", "--short",
                         "HEAD"])
    return {"oneroot": f"{commit} (Python {platform.python_version()})",
            "qemu": first_line(["qemu-system-x86_64", "--version"]),
            "nfs-ganesha": first_line(["dpkg-query", "-W", "-f", "${Version}",
                                       "nfs-ganesha"]),
            "dnsmasq": first_line(["dnsmasq", "-v"])}


def median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=2, help="boots per boot row [2]")
    ap.add_argument("--skip-boot", action="store_true")
    ap.add_argument("--skip-union", action="store_true")
    ap.add_argument("--workdir", type=Path, help="keep the lab's files here (logs) [a temp dir]")
    ap.add_argument("--servers", default="oneroot,dnsmasq",
                    help="which DHCP/TFTP servers to boot from [oneroot,dnsmasq]")
    args = ap.parse_args()
    results: dict[str, Any] = {"runs": args.runs, "host": platform.node(),
                                  "kernel": platform.release(), "machine": machine(),
                                  "versions": versions(), "rpc_counting": RPC_COUNTING}
    boot_rows: list[dict[str, Any]] = []
    union_rows: list[dict[str, Any]] = []
    tops: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-union-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        b = Bench(workdir)
        b.prepare()
        try:
            if not args.skip_union:
                for top, ephemeral, kargs in TOPS:
                    b.set_mode("union", ephemeral=ephemeral, kernel_args=kargs)
                    if b.c.lab is None:
                        b.start_oneroot()
                    print(f"union, {top} top", flush=True)
                    got = b.boot(["node01"])["node01"]
                    tops.append({"top": top, "target_s": got["target_s"],
                                 "uptime_s": got["uptime_s"]})
                    for line in got["lines"]:
                        if "where" in line:
                            union_rows.append({"top": top, **line})
                        if "root_fstype" in line:
                            print(f"    root: {line['root_fstype']}")
            if not args.skip_boot:
                for server in args.servers.split(","):
                    b.stop()
                    b.set_mode("boot", ephemeral=False)
                    b.start_oneroot() if server == "oneroot" else b.start_baseline()
                    for count in (1, 2):
                        for run in range(args.runs):
                            print(f"boot: {server}, {count} node(s), run {run + 1}", flush=True)
                            got = b.boot(["node01", "node02"][:count])
                            for node, r in got.items():
                                boot_rows.append({"server": server, "nodes": count,
                                                  "run": run + 1, "node": node,
                                                  "target_s": r["target_s"],
                                                  "uptime_s": r["uptime_s"]})
        finally:
            b.stop()
    # A part skipped keeps the figures of the last run that made it (said in the file).
    previous = (json.loads((RESULTS / "union.json").read_text())
                if (RESULTS / "union.json").exists() else {})
    if args.skip_boot:
        boot_rows = previous.get("boot", [])
        results["boot_from"] = previous.get("boot_from", previous.get("argv", ""))
    if args.skip_union:
        union_rows, tops = previous.get("union", []), previous.get("tops", [])
        results["union_from"] = previous.get("union_from", previous.get("argv", ""))
    results["argv"] = " ".join(sys.argv[1:])
    results["boot"] = boot_rows
    results["union"] = union_rows
    results["tops"] = tops
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "union.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, " ".join(sys.argv[1:]))
    print((RESULTS / "union.md").read_text())
    return 0


def provenance(results: dict[str, Any]) -> list[str]:
    """The machine and versions lines of a results file (what the run recorded)."""
    info = results.get("machine")
    cpus = (f", {info['cpus']} CPUs ({info['cpu_model']}), load average "
            f"{[round(x, 2) for x in info['load_average']]} at the start"
            if info else " (CPUs and load not recorded by this run)")
    recorded = results.get("versions")
    return [f"Machine: host {results['host']}, kernel {results['kernel']}{cpus}.",
            "Versions: " + ("; ".join(f"{k} {v}" for k, v in recorded.items())
                            if recorded else "not recorded by this run") + ".", ""]


def rpc_note(results: dict[str, Any]) -> str:
    if results.get("rpc_counting") == RPC_COUNTING:
        return RPC_COUNTING + " (mounts of one export share one set of counters)"
    return ("**invalid: summed over every NFS mount of the node** (this run predates the fix): "
            "mounts of one export share a superblock and its counters, so an RPC on the image "
            "export was counted once per mount showing it (judging by READDIR for the same "
            "find, about 3x in the tmpfs rows and 2x in the fuse rows), and the plain-NFS rows "
            "also counted the root's own mounts. Do not use these counts; a re-run counts per "
            "mount")


def write_markdown(results: dict[str, Any], argv: str) -> None:
    lines = ["# Union root: boot time and file-system speed (QEMU TCG, -smp 1 per node)", "",
             "Produced by `flock /tmp/oneroot-qemu.lock .venv/bin/python "
             f"bench/union/bench_union.py {argv}`.".replace(" `.", "`."), ""]
    lines += provenance(results)
    for part, key in (("boot times", "boot_from"), ("file-system figures", "union_from")):
        if results.get(key) is not None:
            lines += [f"The {part} are from an earlier run: `bench/union/bench_union.py "
                      f"{results[key]}`.".replace(" `.", "`."), ""]
    boot = results["boot"]
    assert isinstance(boot, list)
    if boot:
        lines += ["## Power-on to target (s), median over runs and nodes", "",
                  "Firmware + boot files = power-on to target minus the kernel's uptime at "
                  "target: DHCP, the iPXE script, kernel and initramfs (oneroot: HTTP; "
                  "dnsmasq: TFTP).", "",
                  "| DHCP/TFTP server | nodes | to target (s) | kernel uptime at target (s) | "
                  "firmware + boot files (s) | samples |", "|---|---:|---:|---:|---:|---:|"]
        for server in ("oneroot", "dnsmasq"):
            for count in (1, 2):
                rows = [r for r in boot if r["server"] == server and r["nodes"] == count]
                if rows:
                    lines.append(f"| {server} | {count} | "
                                 f"{median([float(r['target_s']) for r in rows])} | "
                                 f"{median([float(r['uptime_s']) for r in rows])} | "
                                 f"{median([r['target_s'] - r['uptime_s'] for r in rows])} | "
                                 f"{len(rows)} |")
        lines.append("")
    tops = results["tops"]
    if tops:
        lines += ["## Power-on to target by top layer, 1 node, oneroot serve (s)", "",
                  "| top | to target (s) | kernel uptime at target (s) |", "|---|---:|---:|"]
        lines += [f"| {t['top']} | {t['target_s']} | {t['uptime_s']} |" for t in tops]
        lines.append("")
    union = results["union"]
    assert isinstance(union, list)
    if union:
        lines += ["## `find /usr | wc -l` and `cat` of 500 files under /usr/share (ms)", "",
                  "NFS RPCs during the find: operation:count:execute-ms from "
                  f"/proc/self/mountstats, {rpc_note(results)}; fuse CPU: the fuse-overlayfs "
                  "daemon's user+system time during the find.", "",
                  "| top | pass | where | find /usr | entries | cat 500 files | fuse CPU | "
                  "NFS RPCs during find |", "|---|---|---|---:|---:|---:|---:|---|"]
        for r in union:
            lines.append(f"| {r['top']} | {r['pass']} | {r['where']} | {r['find_ms']} | "
                         f"{r['find_n']} | {r['cat500_ms']} | {r.get('find_fuse_cpu_ms', '')} | "
                         f"{r.get('find_rpcs', '').replace(',', ', ')} |")
        lines.append("")
    (RESULTS / "union.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
