"""One-off check (not committed): lab nodes boot through the masked view of a live root on
nfs-ganesha with the view exported All_Squash. The lab image holds the state dir (as the
seed's `/` does), so it is exported through a view; node01 persistent (fuse-overlayfs rw top),
node02 ephemeral (tmpfs top, kernel overlay). Each node: ls /root, write in /root,
systemctl --failed, su -l, sudo (setuid, as nobody) with sudoers from its own layer."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from oneroot.ops.lab import LabCluster
from oneroot.testing.cache import suite_cache_dir
from oneroot.testing.labprobe import PROBE_LIB, install_probe, wait_probe

PROBE = "#!/bin/bash\n" + PROBE_LIB + r"""me=$(hostname)
say node="$me" root_fstype="$(findmnt -n -o FSTYPE /)" root_src="$(findmnt -n -o SOURCE /)"
for i in $(seq 120); do
  n=$(systemctl list-jobs --no-legend | grep -v -e oneroot-probe -e '\.target' | wc -l)
  [ "$n" = 0 ] && break; sleep 1
done
say jobs_left="$n"
say root_mode="$(stat -c %a /root)"
if ls -A /root > /tmp/ls.out 2> /tmp/ls.err; then say ls_root=ok entries="$(wc -l < /tmp/ls.out)"
else say ls_root=failed err="$(tr ' ' _ < /tmp/ls.err)"; fi
say persist_before="$(tr ' ' _ < /root/persist 2>/dev/null || echo none)"
if echo "written on $me" > /root/persist; then say root_write=ok; else say root_write=failed; fi
say failed="$(systemctl --failed --no-legend --plain | awk '{print $1}' | paste -sd, -)"
say failed_count="$(systemctl --failed --no-legend --plain | wc -l)"
say su="$(su -l root -c 'echo ok' 2>&1 | tr ' ' _)"
say getty="$(systemctl is-active serial-getty@ttyS0.service)"
say logind="$(systemctl is-active systemd-logind.service)"
say sudo_mode="$(stat -c %a /usr/bin/sudo 2>/dev/null || echo none)"
say sudo_root="$(sudo -n -u nobody id -un 2>&1 | tr ' ' _)"
say sudo_nobody="$(setpriv --reuid=65534 --regid=65534 --clear-groups sudo -n id -u 2>&1 | tr ' ' _)"
say nfs_mounts="$(findmnt -n -t nfs,nfs4 | wc -l)" fuse_procs="$(fuse_pids | wc -l)"
say DONE
systemctl poweroff
"""
SUDOERS = "root ALL=(ALL:ALL) ALL\nnobody ALL=(ALL) NOPASSWD: ALL\n"


def main() -> None:
    workdir = Path(sys.argv[1])
    t0 = time.monotonic()
    c = LabCluster(workdir=workdir, cache_dir=suite_cache_dir(), progress=print)
    c.prepare()
    image = workdir / "images" / c.image_name
    deb = next(Path("/tmp/vs").glob("sudo_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(image)], check=True)
    print(subprocess.run(["ls", "-l", str(image / "usr/bin/sudo"), str(image / "etc/sudoers")],
                         capture_output=True, text=True).stdout)
    c.oneroot("settings", "set", f"state_dir={image}/var/state/systems",
              f"group_dir={image}/var/state/groups")
    c.oneroot("group", "set", "default", "--set", "kernel_args=net.ifnames=0 no_timer_check")
    c.add_nodes(1)
    c.add_nodes(1, first=2, extra=("--ephemeral",))
    sudoers = workdir / "sudoers"
    sudoers.write_text(SUDOERS)
    try:
        c.start()
        print(f"serve up at {time.monotonic() - t0:.0f} s")
        print(c.oneroot("node", "show", "node01").stdout)
        conf = next((c.home / "run").rglob("ganesha.conf"), None)
        if conf is not None:
            print(conf.read_text())
        for node in ("node01", "node02"):
            install_probe(c, node, PROBE)
            c.oneroot("overlay", "put", node, "/etc/sudoers", str(sudoers), "--mode", "0440")
        for rnd in (1,):
            for node in ("node01", "node02"):
                c.boot(node)
            for node in ("node01", "node02"):
                p = wait_probe(c, node, timeout=480)
                print(f"ROUND {rnd} {node} {p}")
            print(f"round {rnd} done at {time.monotonic() - t0:.0f} s")
        for node in ("node01", "node02"):
            print(node, (c.workdir / "vms" / f"{node}.log").exists())
    finally:
        c.stop_verified()


if __name__ == "__main__":
    main()
