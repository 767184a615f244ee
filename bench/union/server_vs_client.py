"""Union modes side by side (issue 6, part 2), in a lab namespace with QEMU nodes (TCG,
-smp 1), one node booted at a time, all served by one `oneroot serve` + nfs-ganesha:

  server     `union=server`: the server's overlayfs merges image + node layer; the node
             mounts one plain NFS root (rw)
  fuse       client mode, rw NFS top: fuse-overlayfs in the initramfs (the seed's line)
  tmpfs      client mode, ephemeral: kernel overlayfs, ro NFS layers + tmpfs top

Inside each node (bench_union.py's probe): `find /usr | wc -l` and `cat` of the same 500 files
under /usr/share, on the root and on the image export mounted directly (plain NFS, the
reference), page cache dropped before the cold pass, then a warm pass; and power-on to target.

    flock /tmp/oneroot-qemu.lock .venv/bin/python bench/union/server_vs_client.py [--runs N]

Writes bench/results/union-modes.md and union-modes.json. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_union import (  # noqa: E402
    PROBE,
    machine,
    probe_lines,
    provenance,
    versions,
    wait_probe_done,
)

from oneroot.errors import LabError  # noqa: E402
from oneroot.initramfs.kernel import default_cache_dir  # noqa: E402
from oneroot.ops.lab import LabCluster  # noqa: E402
from oneroot.testing.labprobe import install_probe  # noqa: E402

RESULTS = HERE.parent / "results"
BOOT_TIMEOUT = 600
MODES = {"server": "node01", "fuse": "node02", "tmpfs": "node03"}


def prepare(c: LabCluster) -> None:
    c.prepare()
    # The lab's `default` image (its workdir) holds the state dir: a union export would nest
    # inside its masked view, which oneroot refuses under nfs-ganesha. Use an empty dir.
    empty = c.workdir / "images" / "empty"
    (empty / "etc").mkdir(parents=True, exist_ok=True)
    c.oneroot("image", "use", str(empty), "--name", "default", "--init-system", "systemd")
    c.add_nodes(1, first=1, extra=("--set", "union=server"))
    c.add_nodes(1, first=2)
    c.add_nodes(1, first=3, extra=("--ephemeral",))
    image = c.workdir / "images" / c.image_name
    (image / "etc/oneroot-bench-mode").write_text("union\n")


def put_probes(c: LabCluster) -> None:
    image = c.workdir / "images" / c.image_name
    for node in MODES.values():
        install_probe(c, node, PROBE.replace("{image}", str(image)))


def boot(c: LabCluster, node: str) -> dict[str, Any]:
    vm = c.boot(node)
    target_s = wait_probe_done(vm, BOOT_TIMEOUT)
    try:
        vm.wait_powered_off(timeout=120)
    except LabError:  # the numbers are in; a slow power-off is not what is measured here
        print(f"    {node} did not power off within 120 s: stopped", flush=True)
        vm.stop()
    return {"target_s": round(target_s, 1), "lines": probe_lines(vm.serial_text())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1, help="boots per mode [1]")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    boots: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-modes-") as tmp:
        c = LabCluster(workdir=Path(tmp), cache_dir=default_cache_dir(),
                       progress=lambda m: print(f"  {m}", flush=True))
        try:
            prepare(c)
            c.start()  # serve makes the layers and node01's union
            put_probes(c)
            for run in range(args.runs):
                for mode, node in MODES.items():
                    print(f"{mode} ({node}), run {run + 1}", flush=True)
                    got = boot(c, node)
                    boots.append({"mode": mode, "run": run + 1, "target_s": got["target_s"]})
                    for line in got["lines"]:
                        if "root_fstype" in line:
                            print(f"    root: {line['root_fstype']}, target at "
                                  f"{got['target_s']} s", flush=True)
                        if "where" in line:
                            rows.append({"mode": mode, "run": run + 1, **line})
        finally:
            c.stop()
    results = {"host": platform.node(), "kernel": platform.release(), "runs": args.runs,
               "machine": machine(), "versions": versions(), "boot": boots, "fs": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "union-modes.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, " ".join(sys.argv[1:]))
    print((RESULTS / "union-modes.md").read_text())
    return 0


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.0f}"


def write_markdown(results: dict[str, Any], argv: str) -> None:
    cmd = ("flock /tmp/oneroot-qemu.lock .venv/bin/python bench/union/server_vs_client.py "
           f"{argv}").strip()
    lines = ["# Union modes side by side: server-side union vs client (fuse top, tmpfs top)",
             "", f"Produced by `{cmd}` (QEMU TCG, -smp 1, 768 MiB, one node at a time; "
             f"nfs-ganesha over NFSv4.2). Times in ms, median over {results['runs']} run(s).",
             "", *provenance(results),
             "| mode | root | pass | find /usr (ms) | entries | cat 500 files (ms) | "
             "plain NFS find (ms) | plain NFS cat (ms) |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    roots = {"server": "1 NFS mount (server overlayfs)", "fuse": "fuse-overlayfs over NFS",
             "tmpfs": "overlayfs, tmpfs top"}
    fs = results["fs"]
    for mode in MODES:
        for pss in ("cold", "warm"):
            union = [r for r in fs if r["mode"] == mode and r["pass"] == pss
                     and r["where"] == "union"]
            plain = [r for r in fs if r["mode"] == mode and r["pass"] == pss
                     and r["where"] == "plain"]
            if not union:
                continue
            lines.append(
                f"| {mode} | {roots[mode]} | {pss} | "
                f"{_median([float(r['find_ms']) for r in union])} | {union[0]['find_n']} | "
                f"{_median([float(r['cat500_ms']) for r in union])} | "
                f"{_median([float(r['find_ms']) for r in plain]) if plain else '-'} | "
                f"{_median([float(r['cat500_ms']) for r in plain]) if plain else '-'} |")
    targets = {mode: [b["target_s"] for b in results["boot"] if b["mode"] == mode]
               for mode in MODES}
    lines += ["", "Power-on to target (s): " + ", ".join(
        f"{mode} {statistics.median(ts):.1f}" for mode, ts in targets.items() if ts), ""]
    (RESULTS / "union-modes.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
