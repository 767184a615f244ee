"""union=block vs the other root modes, in one lab run (QEMU TCG, -smp 1 per node):

  root   inside each node, cold and warm: `find /usr | wc -l` and `cat` of 500 files under
         /usr/share on its root, on the image export mounted directly over NFS (plain NFS),
         and on a local virtio disk holding the same tree (an ext4 made from the image with
         mkfs.ext4 -d, attached read-only to the same VM): the physical limit here.
  boot   power-on to the probe's target for each mode: union=block (node01), union=server
         (node02), union=client with an rw NFS top (fuse-overlayfs, node03).
  build  the image's EROFS file: `oneroot image block` (uncompressed, what node01 boots) and
         lz4: seconds and bytes.

    flock /tmp/oneroot-qemu.lock .venv/bin/python bench/union/bench_block.py [--workdir DIR]

Writes bench/results/block-root.md and block-root.json. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
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

from oneroot.initramfs.kernel import default_cache_dir  # noqa: E402
from oneroot.ops.lab import LabCluster  # noqa: E402
from oneroot.overlay.blockimage import Compression, build_erofs  # noqa: E402
from oneroot.testing.labprobe import install_probe  # noqa: E402

RESULTS = HERE.parents[0] / "results"
BOOT_TIMEOUT = 900
MODES = (("node01", "block"), ("node02", "server"), ("node03", "client"))

_LOOP = """  for pass in cold warm; do
    run /mnt/plain $pass plain
    run "" $pass union
  done"""
# The same tree on a local virtio disk (vda), read-only.
_LOCAL = """  modprobe virtio_blk 2>/dev/null || insmod /usr/local/lib/oneroot-bench/virtio_blk.ko
  mkdir -p /mnt/local
  for _ in $(seq 30); do [ -b /dev/vda ] && break; sleep 1; done
  mount -t ext4 -o ro /dev/vda /mnt/local && say local_disk=mounted || say local_disk=missing
  for pass in cold warm; do
    run /mnt/plain $pass plain
    run "" $pass union
    run /mnt/local $pass local
  done
  umount /mnt/local"""


def block_probe(image: Path) -> str:
    assert _LOOP in PROBE, "bench_union's probe changed: update bench_block"
    return PROBE.replace(_LOOP, _LOCAL).replace("{image}", str(image))


def local_disk(tree: Path, dest: Path) -> dict[str, Any]:
    """An ext4 file of `tree` (userspace mkfs.ext4 -d): the node's local-disk row."""
    size = int(subprocess.run(["du", "-sb", str(tree)], capture_output=True, text=True,
                              check=True).stdout.split()[0])
    dest.unlink(missing_ok=True)
    with dest.open("wb") as f:
        f.truncate(size * 2 + (256 << 20))
    start = time.monotonic()
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(dest)], check=True)
    return {"tree_bytes": size, "seconds": round(time.monotonic() - start, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, help="keep the lab's files here [a temp dir]")
    ap.add_argument("--modes", default="block,server,client",
                    help="which modes to boot, one node each [block,server,client]")
    args = ap.parse_args()
    modes = [(node, mode) for node, mode in MODES if mode in args.modes.split(",")]
    results: dict[str, Any] = {"host": platform.node(), "kernel": platform.release(),
                               "machine": machine(), "versions": versions(),
                               "argv": " ".join(sys.argv[1:])}
    results["versions"]["erofs-utils"] = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "erofs-utils"], capture_output=True,
        text=True).stdout
    with tempfile.TemporaryDirectory(prefix="bench-block-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        c = LabCluster(workdir=workdir, cache_dir=default_cache_dir(),
                       progress=lambda m: print(f"  {m}", flush=True))
        c.prepare()
        image = c.workdir / "images" / c.image_name
        (image / "etc/oneroot-bench-mode").write_text("union\n")
        # The lab image carries only LAB_MODULES: the local disk's driver comes with the bench.
        ko = image / "usr/local/lib/oneroot-bench/virtio_blk.ko"
        ko.parent.mkdir(parents=True, exist_ok=True)
        assert c.kernel is not None
        shutil.copyfile(c.kernel.modules_dir / "kernel/drivers/block/virtio_blk.ko", ko)
        for node, mode in modes:
            c.add_nodes(1, first=int(node[-2:]), extra=("--set", f"union={mode}"))
        built = json.loads(c.oneroot("image", "block", c.image_name, "--json").stdout)
        lz4 = build_erofs(image, workdir / "lz4.erofs", label="bench", epoch=0,
                          compress=Compression.LZ4)
        results["build"] = {"none": {"bytes": built["size"], "seconds": built["seconds"]},
                            "lz4": {"bytes": lz4.size, "seconds": round(lz4.seconds, 2)},
                            "local_ext4": local_disk(image, workdir / "local.ext4")}
        disk = ["-drive", f"file={workdir / 'local.ext4'},if=virtio,format=raw,readonly=on"]
        rows: list[dict[str, Any]] = []
        boots: list[dict[str, Any]] = []
        try:
            c.start()  # serve's nfs apply makes node01's top.ext4
            for node, _ in modes:
                install_probe(c, node, block_probe(image))
            for node, mode in modes:
                print(f"{mode}: {node}", flush=True)
                vm = c.boot(node, extra_args=disk)
                target_s = wait_probe_done(vm, BOOT_TIMEOUT)
                lines = probe_lines(vm.serial_text())
                boots.append({"mode": mode, "target_s": round(target_s, 1),
                              "uptime_s": float(lines[0]["uptime"])})
                rows += [{"mode": mode, **line} for line in lines if "where" in line]
                vm.stop()
        finally:
            c.stop()
    results["boot"] = boots
    results["root"] = rows
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "block-root.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results)
    print((RESULTS / "block-root.md").read_text())
    return 0


def _ms(rows: list[dict[str, Any]], mode: str, where: str, pass_: str) -> int | None:
    found = [int(r["find_ms"]) for r in rows
             if r["mode"] == mode and r["where"] == where and r["pass"] == pass_]
    return found[0] if found else None


def write_markdown(results: dict[str, Any]) -> None:
    argv = results["argv"]
    lines = ["# Root modes: union=block vs plain NFS vs a local disk (QEMU TCG, -smp 1)", "",
             "Produced by `flock /tmp/oneroot-qemu.lock .venv/bin/python "
             f"bench/union/bench_block.py {argv}`.".replace(" `.", "`."), ""]
    lines += provenance(results)
    b = results["build"]
    lines += ["## The image's EROFS file", "",
              "| form | bytes | build (s) |", "|---|---:|---:|",
              f"| EROFS, uncompressed (booted) | {b['none']['bytes']} | {b['none']['seconds']} |",
              f"| EROFS, lz4 | {b['lz4']['bytes']} | {b['lz4']['seconds']} |",
              f"| the tree (du -sb) / local ext4 disk | {b['local_ext4']['tree_bytes']} | "
              f"{b['local_ext4']['seconds']} |", ""]
    lines += ["## Power-on to target, one node at a time (s)", "",
              "| mode | to target (s) | kernel uptime at target (s) |", "|---|---:|---:|"]
    lines += [f"| {r['mode']} | {r['target_s']} | {r['uptime_s']} |" for r in results["boot"]]
    rows = results["root"]
    lines += ["", "## `find /usr | wc -l` and `cat` of 500 files under /usr/share (ms)", "",
              "Each node measures its own root (`union`), the image export mounted over plain "
              "NFS (`plain`) and the same tree on a local virtio disk (`local`), page cache "
              "dropped before each cold pass.", "",
              "| mode | pass | where | find /usr | entries | cat 500 files | NFS RPCs during "
              "find |", "|---|---|---|---:|---:|---:|---|"]
    lines += [f"| {r['mode']} | {r['pass']} | {r['where']} | {r['find_ms']} | {r['find_n']} | "
              f"{r['cat500_ms']} | {r.get('find_rpcs', '').replace(',', ', ')} |" for r in rows]
    lines += ["", "## Ratios (cold find /usr)", ""]
    for _, mode in MODES:
        union, plain = _ms(rows, mode, "union", "cold"), _ms(rows, mode, "plain", "cold")
        local = _ms(rows, mode, "local", "cold")
        if union and plain and local:
            lines.append(f"- {mode}: root / local disk = {union / local:.2f}x; "
                         f"root / plain NFS = {union / plain:.2f}x")
    (RESULTS / "block-root.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
