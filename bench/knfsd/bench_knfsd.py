"""knfsd rows (issue 11, item 7), in one run on the lab's knfsd server VM (TCG):

  boot   power-on to target (the probe unit, after basic.target and oneroot-booted, prints on
         the serial console; the host timestamps the line) of a client-mode node (the seed's
         `…;node01;rw`: fuse-overlayfs over the view of the server's `/`) and a server-mode
         node (`union=server`: one NFS mount of the server's overlayfs);
  fs     in each node, `find /usr | wc -l` with the node's page cache dropped first, on a
         plain NFS mount of `10.0.0.1:/` made by the node itself, then on its root, in the
         same boot (bench_union.py's probe). Ratios: bench/knfsd/report.py.

The server is started as `oneroot lab up --server vm` starts it (`VmServerLab`: prepare, start,
setup, serve), plus node02 `union=server` on image `rootcopy`: the server VM's own disk
attached a second time, read-only (oneroot refuses a server-side union over the live `/`).

    .venv/bin/python bench/knfsd/bench_knfsd.py --prepare-only   # the server disk, no QEMU
    flock /tmp/oneroot-qemu.lock .venv/bin/python bench/knfsd/bench_knfsd.py --modes server
    flock /tmp/oneroot-qemu.lock .venv/bin/python bench/knfsd/bench_knfsd.py --modes client

Both modes in one run take ~20 min of QEMU at host load 7 (more than a 15-min lock slot).
Stopped early (`timeout`, ^C, a failed node), a run keeps the rows of the modes it finished;
a `--modes` run merges into knfsd.json, which says which run made each mode's rows.

Writes bench/results/knfsd.md and knfsd.json. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "union"))
sys.path.insert(0, str(HERE))
from bench_union import PROBE, machine, probe_lines, versions  # noqa: E402
from report import ganesha_reference, merge_modes, render_markdown, summarize  # noqa: E402

from oneroot.initramfs.kernel import default_cache_dir  # noqa: E402
from oneroot.lab.qemu import BOOT_FAILURES  # noqa: E402
from oneroot.ops.labserver import VmServerLab, node_address, node_mac  # noqa: E402
from oneroot.testing.labprobe import PROBE_PATH, PROBE_UNIT, WANTS_PROBE  # noqa: E402

RESULTS = HERE.parent / "results"
ROOTCOPY = "/srv/images/rootcopy"
VIEW = "/var/lib/oneroot/views/default"
NODES = {"client": "node01", "server": "node02"}
MODE_ORDER = ("server", "client")  # the shorter first: a run cut short keeps it
BOOT_TIMEOUT = 420  # power-on to target
# target to the probe's end: a cold `find /usr` through fuse-overlayfs took 166 s (load 7)
MEASURE_TIMEOUT = 900
# A node's initramfs that gave up opens a shell: nothing more comes, fail at once.
NODE_FAILURES = re.compile(f"{BOOT_FAILURES.pattern}|oneroot: shell at stage")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def start_lab(workdir: Path) -> VmServerLab:
    """The server VM with kernel nfsd and `oneroot serve`; node01 client, node02 server mode."""
    lab = VmServerLab(workdir=workdir, cache_dir=default_cache_dir(), progress=say)
    lab.prepare()
    assert lab.disk is not None
    lab.extra_disks = (lab.disk.disk,)  # /dev/vdb: the same tree as the VM's `/`
    lab.start()
    say("server VM up (SSH)")
    lab.setup(nodes=1)  # node01: the seed's line on image `/`
    lab.ssh(f"mkdir -p {ROOTCOPY} && mount -o ro,noload /dev/vdb {ROOTCOPY}")
    lab.oneroot("image", "use", ROOTCOPY, "--name", "rootcopy")
    lab.oneroot("node", "add", NODES["server"], "--mac", str(node_mac(2)), "--ip",
                str(node_address(2)), "--set", "union=server", "--set", "image=rootcopy")
    lab.serve()
    say("oneroot serve up")
    return lab


# bench_union's probe reads its mode from the image; here the first boot of each node
# measures and the next ones only boot (both tops are rw layers: the mark persists), so the
# probe is put once (an `overlay put` costs ~10 s of the server VM's CPU under TCG).
MODE_LINE = "mode=$(cat /etc/oneroot-bench-mode 2>/dev/null || echo boot)"
MEASURE_ONCE = ("mode=union; [ -e /var/lib/oneroot-bench-measured ] && mode=boot; "
                "touch /var/lib/oneroot-bench-measured")


# One cold pass (the node's page cache dropped first), no warm one, no `cat`: a plain cold
# `find /usr` took 68 s on the server VM under TCG (load 7), so a second pass does not fit a
# 15-minute run. The boot's remaining jobs wait on the probe (multi-user.target wants it; the
# probe names them: `busy=`): wait at most 20 tries (~30 s under TCG), not bench_union's 120.
SETTINGS = 'PASSES=cold\nSETTLE_TRIES=20\nCAT500=0\n'


def knfsd_probe() -> str:
    """bench_union's probe, measuring on the node's first boot, its plain NFS `10.0.0.1:/`."""
    assert MODE_LINE in PROBE and PROBE.startswith("#!/bin/bash\n")
    probe = PROBE.replace(MODE_LINE, MEASURE_ONCE).replace("{image}", "/")
    return probe.replace("#!/bin/bash\n", "#!/bin/bash\n" + SETTINGS, 1)


def put_probe(lab: VmServerLab, node: str) -> None:
    lab.put_many(node, {
        PROBE_PATH: (knfsd_probe(), "0755"),
        "/etc/systemd/system/oneroot-probe.service": (PROBE_UNIT, "0644"),
        "/etc/systemd/system/multi-user.target.d/oneroot-probe.conf": (WANTS_PROBE, "0644")})


def boot_once(lab: VmServerLab, mode: str, run: int) -> tuple[dict[str, Any], list[Any]]:
    node = NODES[mode]
    before = round(os.getloadavg()[0], 2)
    vm = lab.boot(node)
    try:
        vm.wait_for(r"PROBE target=reached", timeout=BOOT_TIMEOUT, fail_on=NODE_FAILURES)
        target_s = vm.elapsed()
        vm.wait_for(r"PROBE DONE", timeout=MEASURE_TIMEOUT, fail_on=NODE_FAILURES)
    except Exception:
        print(vm.serial_text()[-6000:])
        print(lab.serve_log()[-3000:])
        raise
    if not vm.wait_powered_off(timeout=120):
        say(f"{node}: QEMU did not exit after the guest's power-off (stopped)")
    lines = probe_lines(vm.serial_text())
    boot = {"mode": mode, "node": node, "run": run, "target_s": round(target_s, 1),
            "uptime_s": float(lines[0]["uptime"]), "load_1m_before": before,
            "load_1m_after": round(os.getloadavg()[0], 2),
            **{k: line[k] for line in lines for k in ("settled", "busy") if k in line}}
    fs = [{"mode": mode, "run": run, **line} for line in lines if "where" in line]
    roots = [line["root_fstype"] for line in lines if "root_fstype" in line]
    say(f"{mode} ({node}) run {run}: target at {target_s:.1f} s, root {roots}, "
        + ", ".join(f"{r['pass']} {r['where']} {r['find_ms']} ms" for r in fs))
    return boot, fs


def server_vm_info(lab: VmServerLab) -> dict[str, Any]:
    def out(command: str) -> str:
        return lab.ssh(command, check=False).stdout.strip()

    return {"kernel": out("uname -r"),
            "nfs_kernel_server": out("dpkg-query -W -f '${Version}' nfs-kernel-server"),
            "memory_mib": lab.server_memory_mib, "cpus": 2}


def host_versions() -> dict[str, str]:
    def version(package: str) -> str:
        done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                              capture_output=True, text=True, check=False)
        return done.stdout.strip() or "?"

    found = versions()
    found.pop("nfs-ganesha", None)
    found.pop("dnsmasq", None)
    found["fuse-overlayfs (in the node initramfs)"] = version("fuse-overlayfs")
    return found


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    command = ("flock /tmp/oneroot-qemu.lock .venv/bin/python bench/knfsd/bench_knfsd.py "
               + " ".join(sys.argv[1:])).strip()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    host = machine()
    results: dict[str, Any] = {
        "command": command, "started": started,
        "host": platform.node(), "kernel": platform.release(), "machine": host,
        "versions": host_versions(), "runs": args.runs, "rootcopy": ROOTCOPY,
        "modes_run": {mode: {"command": command, "started": started,
                             "load_average": host["load_average"]} for mode in args.modes},
        "boots": [], "fs": []}
    lab = start_lab(workdir)
    try:
        results["server_vm"] = server_vm_info(lab)
        results["node_memory_mib"] = lab.memory_mib
        # "cold" is the node's cache; the server's stays warm, as for a busy server.
        lab.ssh(f"find /usr {ROOTCOPY}/usr {VIEW}/usr > /dev/null", check=False)
        for mode in args.modes:
            put_probe(lab, NODES[mode])
        for mode in sorted(args.modes, key=MODE_ORDER.index):  # resumable by mode
            for n in range(1, args.runs + 1):
                boot, fs = boot_once(lab, mode, n)
                results["boots"].append(boot)
                results["fs"] += fs
    except BaseException as exc:  # `timeout`, ^C, a node that failed: keep what finished
        return keep_finished_modes(results, args, exc)
    finally:
        lab.stop()
    return results


def keep_finished_modes(results: dict[str, Any], args: argparse.Namespace,
                        exc: BaseException) -> dict[str, Any]:
    """The rows of the modes whose boots all ended, when the run stopped early; none: raise.
    A later `--modes` run of the others merges into them."""
    finished = [mode for mode in args.modes
                if sum(b["mode"] == mode for b in results["boots"]) == args.runs]
    if not finished:
        raise exc
    say(f"stopped early ({exc!r}): keeping the rows of {', '.join(finished)}")
    return {**results, "modes_run": {m: results["modes_run"][m] for m in finished},
            "boots": [b for b in results["boots"] if b["mode"] in finished],
            "fs": [r for r in results["fs"] if r["mode"] in finished]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1,
                    help="boots per mode; the first measures the find passes [1]")
    ap.add_argument("--prepare-only", action="store_true",
                    help="build (or find) the cached server disk, start no VM")
    ap.add_argument("--workdir", type=Path, help="keep the lab's files (logs) here")
    ap.add_argument("--report-only", action="store_true",
                    help="write knfsd.md again from knfsd.json, start no VM")
    ap.add_argument("--modes", type=lambda text: text.split(","), default=list(NODES),
                    help="client,server [both]; one mode keeps the other's rows of "
                         "knfsd.json (a run of each under 15 min of QEMU lock)")
    args = ap.parse_args()
    if not args.modes or not set(args.modes) <= set(NODES):
        ap.error(f"--modes: choose from {','.join(NODES)}")
    # `timeout` and `kill` end the run through `finally`: the VMs and the netns are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.report_only:
        results = json.loads((RESULTS / "knfsd.json").read_text())
        (RESULTS / "knfsd.md").write_text(render_markdown(results))
        return 0
    if args.prepare_only:
        with tempfile.TemporaryDirectory(prefix="bench-knfsd-") as tmp:
            VmServerLab(workdir=Path(tmp), cache_dir=default_cache_dir(), progress=say).prepare()
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-knfsd-") as tmp:
        workdir = args.workdir or Path(tmp)
        results = run(args, workdir)
    out = RESULTS / "knfsd.json"
    ran = list(results["modes_run"])
    if set(ran) != set(NODES) and out.exists():
        results = merge_modes(json.loads(out.read_text()), results, ran)
    results["summary"] = summarize(results)
    modes = RESULTS / "union-modes.json"
    if modes.exists():
        results["ganesha"] = ganesha_reference(json.loads(modes.read_text()),
                                               "bench/results/union-modes.json")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "knfsd.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "knfsd.md").write_text(render_markdown(results))
    print((RESULTS / "knfsd.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
