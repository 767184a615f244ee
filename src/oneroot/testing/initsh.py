"""The initramfs scripts (/init and the module libraries) under a private busybox sh on the
host, in dry-run mode (`ONEROOT_DRYRUN=1`: commands are printed as `+ CMD`, not run): a busybox
directory with a link per applet, a fake node's tree, and the ways to run /init or a function.

    bindir = private_busybox(Path(shutil.which("busybox")), tmp / "bin")
    node = fake_node(tmp / "node")
    r = run_init(node, bindir, "root=10.0.0.1:/srv/img:ro;tmpfs")   # stdout: `+ CMD` lines
    r = sh(node, bindir, "switchroot_resolve /sbin/init")
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from oneroot.initramfs.builder import write_script_tree


def private_busybox(found: Path, bindir: Path) -> Path:
    """A copy of the busybox at `found` in `bindir` (the system one may be replaced meanwhile)
    with a link per applet."""
    bindir.mkdir(parents=True)
    private = bindir / "busybox"
    shutil.copy2(found, private)
    applets = subprocess.run([str(private), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (bindir / applet).symlink_to("busybox")
    return bindir


def fake_node(base: Path) -> Path:
    """A fake node at `base`: the script tree, /run/oneroot, /sys/class/net/eth0, a sysroot
    (a merged-/usr Debian image whose /sbin/init leads to an executable systemd)."""
    write_script_tree(base / "root")
    (base / "run").mkdir()
    eth0 = base / "sys/class/net/eth0"
    eth0.mkdir(parents=True)
    (eth0 / "type").write_text("1\n")
    (eth0 / "address").write_text("52:54:00:12:34:56\n")
    lo = base / "sys/class/net/lo"
    lo.mkdir(parents=True)
    (lo / "type").write_text("772\n")
    (lo / "address").write_text("00:00:00:00:00:00\n")
    sysroot = base / "sysroot"
    for d in ("usr/sbin", "usr/lib/systemd", "dev", "proc", "sys", "run"):
        (sysroot / d).mkdir(parents=True)
    for link, target in (("sbin", "usr/sbin"), ("lib", "usr/lib"),
                         ("usr/sbin/init", "/lib/systemd/systemd")):
        (sysroot / link).symlink_to(target)
    (sysroot / "usr/lib/systemd/systemd").write_bytes(b"\x7fELF")
    os.chmod(sysroot / "usr/lib/systemd/systemd", 0o755)
    (base / "modules").write_text("# test\nvirtio_net\nnfsv4\n")
    return base


# A lease as udhcpc.script would write it, when the dry run reaches udhcpc.
LEASE_STUB = """
oneroot_dryrun_hook() {
	case $1 in
	udhcpc)
		printf '%s\\n' ONEROOT_NET_IF=eth0 ONEROOT_NET_IP=10.0.0.5 ONEROOT_NET_PREFIX=24 \\
			ONEROOT_NET_DNS=10.0.0.1 ONEROOT_NET_SERVER=10.0.0.1 >"$ONEROOT_RUN/net.env" ;;
	esac
	return 0
}
"""


def env_for(node: Path, bbdir: Path, **extra: str) -> dict[str, str]:
    return {"PATH": str(bbdir), "LC_ALL": "C", "ONEROOT_DRYRUN": "1",
            "ONEROOT_LIB": str(node / "root/lib/oneroot"), "ONEROOT_RUN": str(node / "run"),
            "ONEROOT_SYSFS": str(node / "sys"), "ONEROOT_NEWROOT": str(node / "sysroot"),
            "ONEROOT_MODULES_LIST": str(node / "modules"), "ONEROOT_NET_WAIT": "0", **extra}


def run_init(node: Path, bbdir: Path, cmdline: str, *args: str,
             stubs: str = LEASE_STUB) -> subprocess.CompletedProcess[str]:
    (node / "stubs.sh").write_text(stubs)
    env = env_for(node, bbdir, ONEROOT_CMDLINE=cmdline, ONEROOT_TEST_STUBS=str(node / "stubs.sh"))
    result = subprocess.run([str(bbdir / "busybox"), "sh", str(node / "root/init"), *args],
                            capture_output=True, text=True, env=env, timeout=30, check=False)
    result.stdout = result.stdout.replace(str(node), "@")
    result.stderr = result.stderr.replace(str(node), "@")
    return result


def sh(node: Path, bbdir: Path, script: str) -> subprocess.CompletedProcess[str]:
    """Source every library as /init does, then run `script` (functions under test)."""
    prelude = ('. "$ONEROOT_LIB/generated.sh"\n'
               'for _m in $ONEROOT_MODULES; do\n'
               '  [ -e "$ONEROOT_LIB/lib/$_m.sh" ] && . "$ONEROOT_LIB/lib/$_m.sh"\n'
               'done\n')
    result = subprocess.run([str(bbdir / "busybox"), "sh", "-c", prelude + script],
                            capture_output=True, text=True, env=env_for(node, bbdir),
                            timeout=30, check=False)
    result.stdout = result.stdout.replace(str(node), "@")
    return result


def commands(out: str) -> list[str]:
    return [line[2:] for line in out.splitlines() if line.startswith("+ ")]
