"""/init and the module libraries under a private busybox sh, in dry-run mode: the command line,
the NFS options, the union plans, the failure path, reports; and shellcheck of every script."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from oneroot.initramfs.builder import MODULES_ROOT
from oneroot.testing.initsh import commands, run_init, sh

# -- the command line --------------------------------------------------------------------------


CMDLINE = " ".join([
    "BOOT_IMAGE=/k", "ip=dhcp", "root=10.0.0.1:/:ro;10.0.0.1:/var/state/systems/node01;rw",
    "BOOTIF=01-AA-bb-CC-dd-EE-ff", "oneroot.break=union",
    "oneroot.status=http://10.0.0.1:8080/api/v1/report", "softlevel=computenode",
    "oneroot.nfs.tries=3", "oneroot.dhcp.tries=x", "init=/lib/systemd/systemd",
    "console=ttyS0,115200",
])


def test_cmdline_values(node: Path, bbdir: Path) -> None:
    r = sh(node, bbdir, f"""
oneroot_parse_cmdline '{CMDLINE}'
echo "root=$ONEROOT_ROOT|$ONEROOT_HAS_ROOT"
echo "ip=$ONEROOT_IP bootif=$ONEROOT_BOOTIF break=$ONEROOT_BREAK"
echo "status=$ONEROOT_STATUS runlevel=$ONEROOT_RUNLEVEL init=$ONEROOT_INIT"
echo "tries=$ONEROOT_DHCP_TRIES/$ONEROOT_NFS_TRIES"
""")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "root=10.0.0.1:/:ro;10.0.0.1:/var/state/systems/node01;rw|1",
        "ip=dhcp bootif=aa:bb:cc:dd:ee:ff break=union",
        "status=http://10.0.0.1:8080/api/v1/report runlevel=computenode init=/lib/systemd/systemd",
        "tries=5/3",
    ]


@pytest.mark.parametrize(("word", "runlevel"), [
    ("systemd.unit=computenode.target", "computenode.target"),
    ("softlevel=computenode", "computenode"),
    ("single", "single"),
    ("3", "3"),
    ("quiet", ""),
])
def test_cmdline_runlevel(node: Path, bbdir: Path, word: str, runlevel: str) -> None:
    r = sh(node, bbdir, f"oneroot_parse_cmdline 'root=a:/b {word}'; echo \"[$ONEROOT_RUNLEVEL]\"")
    assert r.stdout.strip() == f"[{runlevel}]"


@pytest.mark.parametrize(("value", "mac"), [
    ("01-52-54-00-12-34-56", "52:54:00:12:34:56"),
    ("52-54-00-12-34-56", "52:54:00:12:34:56"),
    ("06-52-54-00-12-34-56-77", ""),
    ("01-zz-54-00-12-34-56", ""),
])
def test_bootif(node: Path, bbdir: Path, value: str, mac: str) -> None:
    r = sh(node, bbdir, f"oneroot_bootif_mac '{value}'")
    assert r.stdout.strip() == mac


def test_bootif_picks_the_nic(node: Path, bbdir: Path) -> None:
    eth1 = node / "sys/class/net/eth1"
    eth1.mkdir()
    (eth1 / "type").write_text("1\n")
    (eth1 / "address").write_text("52:54:00:aa:bb:cc\n")
    r = sh(node, bbdir, "ONEROOT_BOOTIF=''; net_candidates; echo \"$NET_CANDIDATES\"; "
                        "ONEROOT_BOOTIF=52:54:00:aa:bb:cc; net_candidates; "
                        "echo \"$NET_CANDIDATES\"")
    assert r.stdout.splitlines() == ["eth0 eth1", "eth1"]


# -- NFS, union, reports ---------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "opts", "expected"), [
    ("ro", "", "ro,vers=4.2,addr=10.0.0.1,clientaddr=10.0.0.5"),
    ("rw", "vers=4.1,noac", "rw,vers=4.1,noac,addr=10.0.0.1,clientaddr=10.0.0.5"),
    ("ro", "vers=3", "ro,vers=3,nolock,addr=10.0.0.1"),
    ("ro", "nfsvers=3,lock", "ro,nfsvers=3,lock,addr=10.0.0.1"),
    ("ro", "addr=10.9.9.9,clientaddr=10.0.0.9", "ro,vers=4.2,addr=10.9.9.9,clientaddr=10.0.0.9"),
])
def test_nfs_options(node: Path, bbdir: Path, mode: str, opts: str, expected: str) -> None:
    r = sh(node, bbdir, f"nfs_options {mode} '{opts}' 10.0.0.1 10.0.0.5")
    assert r.stdout.strip() == expected


def test_nfs_source_brackets_ipv6(node: Path, bbdir: Path) -> None:
    r = sh(node, bbdir, "nfs_source fd00::1 /srv; nfs_source 10.0.0.1 /")
    assert r.stdout.splitlines() == ["[fd00::1]:/srv", "10.0.0.1:/"]


@pytest.mark.parametrize(("spec", "plan", "options"), [
    ("s:/img", "direct", ""),
    ("s:/img:ro;tmpfs", "overlay",
     "lowerdir=@/run/layers/1,upperdir=@/run/layers/2/upper,workdir=@/run/layers/2/work"),
    ("s:/img:ro;s:/group;s:/node;tmpfs:size=1g", "overlay",
     "lowerdir=@/run/layers/3:@/run/layers/2:@/run/layers/1,"
     "upperdir=@/run/layers/4/upper,workdir=@/run/layers/4/work"),
    ("s:/img:ro;s:/node;ro", "readonly", "lowerdir=@/run/layers/2:@/run/layers/1"),
    ("s:/b/l@1.erofs:ro,loop=erofs;s:/s/n1/top.ext4;rw,loop=ext4", "block",
     "lowerdir=@/run/layers/1,upperdir=@/run/layers/2/upper,workdir=@/run/layers/2/work"),
    ("s:/:ro;s:/var/state/systems/node01;rw", "fuse",
     "lowerdir=@/run/layers/1,upperdir=@/run/layers/2/upper,workdir=@/run/layers/2/work,"
     "allow_other,dev,suid,fast_ino=1"),
])
def test_union_plan_and_options(node: Path, bbdir: Path, spec: str, plan: str,
                                options: str) -> None:
    r = sh(node, bbdir, f"rootspec_parse '{spec}' && union_plan && echo \"$UNION_PLAN\" && "
                        "union_overlay_options")
    assert r.stdout.splitlines() == ([plan, options] if options else [plan])


def test_tmpfs_options(node: Path, bbdir: Path) -> None:
    r = sh(node, bbdir, "union_tmpfs_options size=512m,mode=0700,nr_inodes=1k; "
                        "echo \"$UNION_TMPFS_OPTIONS $UNION_ROOT_MODE\"")
    assert r.stdout.strip() == "mode=0755,size=512m,nr_inodes=1k 0700"


def test_urlencode(node: Path, bbdir: Path) -> None:
    r = sh(node, bbdir, "report_urlencode 'layers: 10.0.0.1:/srv;ro & 100%'")
    assert r.stdout.strip() == "layers%3A+10.0.0.1%3A%2Fsrv%3Bro+%26+100%25"


NSLOOKUP = """Server:\t\t10.0.0.1
Address:\t10.0.0.1:53

Non-authoritative answer:
Name:\tnfs.lab
Address: 10.0.0.7

"""


def test_nslookup_answer(node: Path, bbdir: Path) -> None:
    (node / "ns.txt").write_text(NSLOOKUP)
    r = sh(node, bbdir, f"net_parse_nslookup <'{node}/ns.txt'; echo rc=$?; "
                        "printf 'Server: 1.1.1.1\\nAddress: 1.1.1.1:53\\n' | net_parse_nslookup;"
                        " echo rc=$?")
    assert r.stdout.splitlines() == ["10.0.0.7", "rc=0", "rc=1"]


def test_report_url_keeps_addresses(node: Path, bbdir: Path) -> None:
    r = sh(node, bbdir, "report_url http://10.0.0.1:8080/api/v1/report")
    assert r.stdout.strip() == "http://10.0.0.1:8080/api/v1/report"


# -- /init, whole --------------------------------------------------------------------------


STATUS = "oneroot.status=http://10.0.0.1:8080/api/v1/report"


def test_init_tmpfs_top(node: Path, bbdir: Path) -> None:
    r = run_init(node, bbdir, f"ip=dhcp BOOTIF=01-52-54-00-12-34-56 {STATUS} "
                              "root=10.0.0.1:/srv/img:ro;tmpfs:size=512m systemd.unit=c.target",
                 "single")
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    assert cmds[:2] == ["modprobe virtio_net", "modprobe nfsv4"]
    assert "udhcpc -i eth0 -s @/root/lib/oneroot/udhcpc.script -n -q -t 3 -T 2 -V oneroot" in cmds
    assert ("mount -t nfs -o ro,vers=4.2,addr=10.0.0.1,clientaddr=10.0.0.5 10.0.0.1:/srv/img "
            "@/run/layers/1") in cmds
    assert "mount -t tmpfs -o mode=0755,size=512m tmpfs @/run/layers/2" in cmds
    assert ("mount -t overlay -o lowerdir=@/run/layers/1,upperdir=@/run/layers/2/upper,"
            "workdir=@/run/layers/2/work overlay @/sysroot") in cmds
    assert cmds[-5:] == ["mount --move /dev @/sysroot/dev", "mount --move /sys @/sysroot/sys",
                         "mount --move /run @/sysroot/run", "mount --move /proc @/sysroot/proc",
                         "exec switch_root @/sysroot /sbin/init single"]
    stages = [c.split("stage=")[1].split("&")[0] for c in cmds if c.startswith("timeout 5 wget")]
    assert stages == ["dhcp", "layers", "union", "switch_root"]


# wget as the dry run sees it: `dhcp` gets no answer twice, `layers` always; `union` is refused.
REPORT_STUB = """
_tries_dhcp=0
oneroot_dryrun_hook() {
	case $1 in
	udhcpc)
		printf '%s\\n' ONEROOT_NET_IF=eth0 ONEROOT_NET_IP=10.0.0.5 >"$ONEROOT_RUN/net.env" ;;
	timeout)
		case $* in
		*stage=dhcp*)
			_tries_dhcp=$((_tries_dhcp + 1))
			if [ "$_tries_dhcp" -lt 3 ]; then
				echo "wget: can't connect to remote host (10.0.0.1): Connection refused" >&2
				return 1
			fi ;;
		*stage=layers*) echo "wget: download timed out" >&2; return 1 ;;
		*stage=union*)
			echo "wget: server returned error: HTTP/1.1 403 Forbidden" >&2
			return 1 ;;
		esac ;;
	esac
	return 0
}
"""


def test_init_reports_are_tried_again_with_backoff_but_never_stop_the_boot(
        node: Path, bbdir: Path) -> None:
    """A report that got no answer is sent again (3 tries, 1 then 2 s apart: the server
    records a repeat once); a 4xx answer is final; the boot goes on either way."""
    r = run_init(node, bbdir, f"ip=dhcp {STATUS} root=10.0.0.1:/srv/img:ro;tmpfs",
                 stubs=REPORT_STUB)
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    stages = [c.split("stage=")[1].split("&")[0] for c in cmds if c.startswith("timeout 5 wget")]
    assert stages == ["dhcp"] * 3 + ["layers"] * 3 + ["union", "switch_root"]
    assert [c for c in cmds if c.startswith("sleep")] == ["sleep 1", "sleep 2"] * 2
    assert ("report of stage dhcp failed (try 1 of 3): wget: can't connect to remote host "
            "(10.0.0.1): Connection refused; again in 1s") in r.stderr
    assert "report of stage layers did not reach http://10.0.0.1:8080/api/v1/report" in r.stderr
    assert "report of stage union refused: wget: server returned error: HTTP/1.1 403" in r.stderr
    assert cmds[-1] == "exec switch_root @/sysroot /sbin/init"


def test_init_fuse_top_keeps_proc(node: Path, bbdir: Path) -> None:
    r = run_init(node, bbdir, "ip=dhcp root=10.0.0.1:/:ro;10.0.0.1:/var/state/systems/node01;rw")
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    assert ("mount -t nfs -o rw,vers=4.2,addr=10.0.0.1,clientaddr=10.0.0.5 "
            "10.0.0.1:/var/state/systems/node01 @/run/layers/2") in cmds
    assert ("@fuse-overlayfs -o lowerdir=@/run/layers/1,upperdir=@/run/layers/2/upper,"
            "workdir=@/run/layers/2/work,allow_other,dev,suid,fast_ino=1 @/sysroot") in cmds
    assert "mount -t proc -o nosuid,nodev,noexec proc @/sysroot/proc" in cmds
    assert "mount --move /proc @/sysroot/proc" not in cmds


def test_init_fuse_opts_are_appended(node: Path, bbdir: Path) -> None:
    r = run_init(node, bbdir, "root=10.0.0.1:/:ro;10.0.0.1:/var/state/systems/node01;rw "
                              "oneroot.fuse.opts=static_nlink,noacl")
    assert r.returncode == 0, r.stderr
    assert ("@fuse-overlayfs -o lowerdir=@/run/layers/1,upperdir=@/run/layers/2/upper,"
            "workdir=@/run/layers/2/work,allow_other,dev,suid,fast_ino=1,static_nlink,noacl "
            "@/sysroot") in commands(r.stdout)


@pytest.mark.parametrize(("root", "union"), [
    ("10.0.0.1:/:ro;10.0.0.1:/g;ro;10.0.0.1:/var/state/systems/node01;rw",
     "@fuse-overlayfs -o lowerdir=@/run/lower,upperdir=@/run/layers/3/upper,"
     "workdir=@/run/layers/3/work,allow_other,dev,suid,fast_ino=1 @/sysroot"),
    ("10.0.0.1:/:ro;10.0.0.1:/g;ro;tmpfs",
     "mount -t overlay -o lowerdir=@/run/lower,upperdir=@/run/layers/3/upper,"
     "workdir=@/run/layers/3/work overlay @/sysroot"),
])
def test_init_lower_layers_without_xattrs(node: Path, bbdir: Path, root: str,
                                          union: str) -> None:
    """oneroot.union.lowerxattrs=off (ganesha-ceph): the lower layers through a read-only
    fuse-overlayfs with noxattrs=1, and the union over that one mount; its daemon outlives
    switch_root as the union's does (/proc stays)."""
    r = run_init(node, bbdir, f"ip=dhcp root={root} oneroot.union.lowerxattrs=off")
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    lower = ("@fuse-overlayfs -o lowerdir=@/run/layers/2:@/run/layers/1,noxattrs=1,fast_ino=1 "
             "@/run/lower")
    assert lower in cmds and union in cmds
    assert cmds.index(lower) < cmds.index(union)
    assert "mount -t proc -o nosuid,nodev,noexec proc @/sysroot/proc" in cmds
    # without the argument (or with =on, later on the line): the layers themselves
    r = run_init(node, bbdir, f"ip=dhcp root={root} oneroot.union.lowerxattrs=off "
                              "oneroot.union.lowerxattrs=on")
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    assert not [c for c in cmds if "noxattrs" in c]
    assert union.replace("lowerdir=@/run/lower", "lowerdir=@/run/layers/2:@/run/layers/1") \
        in cmds


BLOCK_ROOT = ("root=10.0.0.1:/b/lab@3.erofs:ro,loop=erofs,vers=4.1;"
              "10.0.0.1:/s/node01/top.ext4;rw,loop=ext4")


def test_init_block_root_loop_mounts_image_files(node: Path, bbdir: Path) -> None:
    """union=block: each file's directory over NFS (no loop= among the NFS options), the file
    loop-mounted, and kernel overlayfs with upper/work on the ext4."""
    for layer, name in ((1, "lab@3.erofs"), (2, "top.ext4")):
        (node / f"run/nfs/{layer}").mkdir(parents=True)
        (node / f"run/nfs/{layer}/{name}").write_bytes(b"")
    r = run_init(node, bbdir, f"ip=dhcp {BLOCK_ROOT}")
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    assert ("mount -t nfs -o ro,vers=4.1,addr=10.0.0.1,clientaddr=10.0.0.5 10.0.0.1:/b "
            "@/run/nfs/1") in cmds
    assert "mount -t erofs -o ro,loop @/run/nfs/1/lab@3.erofs @/run/layers/1" in cmds
    assert ("mount -t nfs -o rw,vers=4.2,addr=10.0.0.1,clientaddr=10.0.0.5 10.0.0.1:/s/node01 "
            "@/run/nfs/2") in cmds
    assert "mount -t ext4 -o rw,loop @/run/nfs/2/top.ext4 @/run/layers/2" in cmds
    assert ("mount -t overlay -o lowerdir=@/run/layers/1,upperdir=@/run/layers/2/upper,"
            "workdir=@/run/layers/2/work overlay @/sysroot") in cmds
    assert not [c for c in cmds if "fuse-overlayfs" in c]


def test_init_block_root_without_its_file_says_how_to_build_it(node: Path, bbdir: Path) -> None:
    r = run_init(node, bbdir, f"ip=dhcp {BLOCK_ROOT}")
    assert r.returncode != 0
    assert "layer 1: no image file @/run/nfs/1/lab@3.erofs on the server" in r.stdout + r.stderr
    assert "oneroot image block IMAGE" in r.stdout + r.stderr


def test_init_single_layer_is_mounted_directly(node: Path, bbdir: Path) -> None:
    r = run_init(node, bbdir, "root=10.0.0.1:/srv/node01")
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    assert ("mount -t nfs -o rw,vers=4.2,addr=10.0.0.1,clientaddr=10.0.0.5 10.0.0.1:/srv/node01"
            " @/run/layers/1") in cmds
    assert "mount --move @/run/layers/1 @/sysroot" in cmds
    assert not [c for c in cmds if "overlay" in c]


@pytest.mark.parametrize(("cmdline", "stage", "reason", "hint"), [
    ("ip=dhcp root=10.0.0.1:/a;;rw", "layers", "bad root=: empty layer", "remove the extra ';'"),
    ("ip=dhcp", "layers", "no root= on the kernel command line", "oneroot render"),
    ("ip=dhcp root=tmpfs", "union", "root= has only a tmpfs", "below the tmpfs"),
    ("ip=10.0.0.5::10.0.0.1:255.255.255.0 root=a:/b", "dhcp", "ip=10.0.0.5::", "ip=dhcp"),
    ("ip=dhcp root=10.0.0.1:/img:ro;10.0.0.1:/node;rw oneroot.fuse.opts=noacl,upperdir=/x",
     "union",
     "oneroot.fuse.opts sets a layer directory", "root= sets the layers"),
])
def test_init_failure_says_stage_reason_fix(node: Path, bbdir: Path, cmdline: str, stage: str,
                                             reason: str, hint: str) -> None:
    r = run_init(node, bbdir, f"{cmdline} {STATUS}")
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    failed = [x for x in lines if x.startswith(f"oneroot: stage {stage} failed: ")]
    assert failed and reason in failed[0], r.stderr
    fix = lines[lines.index(failed[0]) + 1]
    assert fix.startswith("oneroot: fix: ") and hint in fix
    assert "stage=failed&status=failed&message=" + stage in commands(r.stdout)[-1]


def test_init_no_nic(node: Path, bbdir: Path) -> None:
    shutil.rmtree(node / "sys/class/net/eth0")
    r = run_init(node, bbdir, "ip=dhcp root=10.0.0.1:/srv/img:ro;tmpfs")
    assert "oneroot: stage dhcp failed: no network interface found" in r.stderr
    assert "extra_nics" in r.stderr


def test_init_dhcp_rounds_back_off(node: Path, bbdir: Path) -> None:
    r = run_init(node, bbdir, "ip=dhcp oneroot.dhcp.tries=4 root=10.0.0.1:/srv/img", stubs="")
    assert r.returncode == 1
    sleeps = [c for c in commands(r.stdout) if c.startswith("sleep")]
    assert sleeps == ["sleep 1", "sleep 2", "sleep 4"]
    assert "no DHCP lease on eth0 after 4 rounds" in r.stderr


def test_init_nfs_mount_retries(node: Path, bbdir: Path) -> None:
    stubs = """
_tries=0
oneroot_dryrun_hook() {
	case $1 in
	udhcpc) printf '%s\\n' ONEROOT_NET_IF=eth0 ONEROOT_NET_IP=10.0.0.5 >"$ONEROOT_RUN/net.env" ;;
	mount)
		case $* in
		*nfs*)
			_tries=$((_tries + 1))
			if [ "$_tries" -lt 3 ]; then
				echo "mount: mounting x failed: Connection refused" >&2
				return 1
			fi ;;
		esac ;;
	esac
	return 0
}
"""
    r = run_init(node, bbdir, "root=10.0.0.1:/srv/img:ro;tmpfs", stubs=stubs)
    assert r.returncode == 0, r.stderr
    assert "failed (try 2 of 6): mount: mounting x failed: Connection refused; again in 2s" \
        in r.stderr
    assert [c for c in commands(r.stdout) if c.startswith("sleep")] == ["sleep 1", "sleep 2"]


def test_init_break_opens_a_shell_before_the_stage(node: Path, bbdir: Path) -> None:
    r = run_init(node, bbdir, "root=10.0.0.1:/srv/img:ro;tmpfs oneroot.break=layers")
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    shell = out.index("+ sh -i")
    assert any("mount -t nfs" in line for line in out[shell:])
    assert not any("mount -t nfs" in line for line in out[:shell])
    assert "shell at stage layers (oneroot.break=layers)" in r.stderr


# -- init= inside the new root -----------------------------------------------------------------


@pytest.mark.parametrize(("init", "leads_to"), [
    ("/sbin/init", "/usr/lib/systemd/systemd"),
    ("//sbin/./init", "/usr/lib/systemd/systemd"),
    ("/usr/sbin/../../lib/systemd/systemd", "/usr/lib/systemd/systemd"),
    ("/usr/lib/systemd/../../sbin/init", "/usr/lib/systemd/systemd"),
])
def test_init_is_followed_inside_the_new_root(node: Path, bbdir: Path, init: str,
                                              leads_to: str) -> None:
    r = sh(node, bbdir, f"switchroot_resolve {init}")
    assert (r.returncode, r.stdout.strip()) == (0, leads_to), r.stderr


@pytest.mark.parametrize(("change", "init", "why"), [
    ("lib_dir", "/sbin/init",
     "/sbin/init -> /usr/sbin/init -> /lib/systemd/systemd: /lib/systemd/systemd is missing"),
    ("none", "/sbin/nothing", "/sbin/nothing -> /usr/sbin/nothing: /usr/sbin/nothing is missing"),
    ("loop", "/sbin/loop", "too many levels of symbolic links"),
    ("file_parent", "/usr/lib/systemd/systemd/x", "/usr/lib/systemd/systemd is not a directory"),
])
def test_init_that_leads_nowhere_fails_the_stage(node: Path, bbdir: Path, change: str,
                                                 init: str, why: str) -> None:
    """A dangling init= is a stage failure (reason, fix, report, shell), not switch_root's
    exec failing after the initramfs is gone (a kernel panic naming neither step nor layer)."""
    sysroot = node / "sysroot"
    if change == "lib_dir":  # `dpkg-deb -x` of a package holding ./lib/systemd/system/
        (sysroot / "lib").unlink()
        (sysroot / "lib/systemd/system").mkdir(parents=True)
    elif change == "loop":
        (sysroot / "usr/sbin/loop").symlink_to("/sbin/loop")
    r = run_init(node, bbdir, f"root=10.0.0.1:/srv/img:ro;tmpfs init={init} {STATUS}")
    assert r.returncode == 1
    failed = [x for x in r.stderr.splitlines()
              if x.startswith("oneroot: stage switch_root failed: the root's init does not "
                              "resolve: ")]
    assert failed and why in failed[0], r.stderr
    assert "a link such as /lib -> usr/lib replaced by a directory?" in r.stderr
    assert not [c for c in commands(r.stdout) if "switch_root @" in c]
    assert "stage=failed&status=failed&message=switch_root" in commands(r.stdout)[-1]


def test_init_that_is_a_directory_fails_the_stage(node: Path, bbdir: Path) -> None:
    r = run_init(node, bbdir, "root=10.0.0.1:/srv/img:ro;tmpfs init=/sbin")
    assert r.returncode == 1
    assert ("stage switch_root failed: the root's init /sbin leads to /usr/sbin, which is not "
            "an executable file") in r.stderr



# -- shellcheck --------------------------------------------------------------------------------


def shell_files() -> list[Path]:
    files = sorted(MODULES_ROOT.rglob("*.sh"))
    files += [MODULES_ROOT / "00-base/init", MODULES_ROOT / "20-net/udhcpc.script"]
    return files


@pytest.mark.parametrize("path", shell_files(), ids=lambda p: str(p.relative_to(MODULES_ROOT)))
def test_shellcheck(path: Path) -> None:
    if shutil.which("shellcheck") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("shellcheck is not installed")
        pytest.skip("shellcheck is not installed")
    r = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stdout
