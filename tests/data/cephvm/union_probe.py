"""Runs as root in the Debian 12 lab VM (python3 only): is a kernel CephFS mount a valid
overlayfs upper (and lower) for oneroot's exported server-side union? Prints one JSON object
per step: {"step", "ok", "detail"} and, for mounts, the kernel's dmesg lines of that step.

    python3 union_probe.py CEPHFS_MOUNT LOCAL_DIR
"""

import ctypes
import errno
import json
import os
import subprocess
import sys

UNION = "index=on,nfs_export=on,xino=on"  # oneroot.nfs.server_union.UNION_OPTIONS
RENAME_WHITEOUT = 1 << 2
AT_FDCWD = -100
libc = ctypes.CDLL(None, use_errno=True)


def report(step, ok, detail="", **more):
    print(json.dumps({"step": step, "ok": ok, "detail": detail, **more}), flush=True)


def sh(*argv):
    done = subprocess.run(argv, capture_output=True, text=True)
    return done.returncode, (done.stdout + done.stderr).strip()


def dmesg_since(mark):
    lines = sh("dmesg")[1].splitlines()
    return [line for line in lines[mark:] if "overlay" in line or "ceph" in line
            or "nfsd" in line]


def dmesg_mark():
    return len(sh("dmesg")[1].splitlines())


def attempt(step, fn):
    try:
        detail = fn()
    except OSError as exc:
        report(step, False, f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}")
        return False
    report(step, True, detail or "")
    return True


def fs_ops(base):
    """The operations an overlayfs upper needs, straight on the filesystem."""
    os.makedirs(f"{base}/ops", exist_ok=True)
    attempt("trusted.* xattr set/get", lambda: (
        os.setxattr(f"{base}/ops", "trusted.overlay.probe", b"y"),
        os.getxattr(f"{base}/ops", "trusted.overlay.probe").decode())[1])
    attempt("user.* xattr", lambda: os.setxattr(f"{base}/ops", "user.probe", b"y"))
    attempt("mknod c 0 0 (whiteout)", lambda: os.mknod(f"{base}/ops/wh", 0o20000, 0))
    open(f"{base}/ops/src", "w").close()

    def rename_whiteout():
        if libc.renameat2(AT_FDCWD, f"{base}/ops/src".encode(), AT_FDCWD,
                          f"{base}/ops/dst".encode(), RENAME_WHITEOUT) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return oct(os.lstat(f"{base}/ops/src").st_mode)
    attempt("renameat2 RENAME_WHITEOUT", rename_whiteout)

    def tmpfile():
        fd = os.open(f"{base}/ops", os.O_TMPFILE | os.O_WRONLY, 0o600)
        os.close(fd)
    attempt("O_TMPFILE", tmpfile)



def mount_union(step, lower, upper, work, merged, options=UNION):
    for d in (upper, work, merged):
        os.makedirs(d, exist_ok=True)
    mark = dmesg_mark()
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}" + (f",{options}" if options else "")
    rc, out = sh("mount", "-t", "overlay", "oneroot-union-probe", "-o", opts, merged)
    report(step, rc == 0, out, options=opts, dmesg=dmesg_since(mark))
    return rc == 0


def union_ops(step, merged):
    """What a node does through its union: copy-up, whiteout, rename, new files."""
    def run():
        with open(f"{merged}/a", "a") as f:  # copy-up of a lower file
            f.write("changed\n")
        os.unlink(f"{merged}/gone")  # a whiteout
        os.rename(f"{merged}/a", f"{merged}/a2")  # rename of a copied-up file
        os.makedirs(f"{merged}/d/new", exist_ok=True)  # copy-up of a lower dir
        with open(f"{merged}/d/new/f", "w") as f:
            f.write("new\n")
        return sorted(os.listdir(merged))
    attempt(step, run)


def knfsd_export(step, merged, client_mount):
    """Export the union with knfsd and read/write it over NFS on loopback."""
    mark = dmesg_mark()
    sh("systemctl", "start", "nfs-server")
    rc, out = sh("exportfs", "-o", "rw,no_root_squash,no_subtree_check,fsid=4711",
                 f"127.0.0.1:{merged}")
    report(f"{step}: exportfs", rc == 0, out, dmesg=dmesg_since(mark))
    if rc:
        return
    os.makedirs(client_mount, exist_ok=True)
    rc, out = sh("mount", "-t", "nfs", "-o", "vers=4.2,soft,timeo=50,retrans=1",
                 f"127.0.0.1:{merged}", client_mount)
    report(f"{step}: NFS mount", rc == 0, out, dmesg=dmesg_since(mark))
    if rc:
        return

    def over_nfs():
        with open(f"{client_mount}/over-nfs", "w") as f:
            f.write("via nfs\n")
        os.unlink(f"{client_mount}/d/f")
        os.rename(f"{client_mount}/over-nfs", f"{client_mount}/over-nfs2")
        return sorted(os.listdir(client_mount))
    attempt(f"{step}: write, unlink, rename over NFS", over_nfs)
    sh("umount", client_mount)
    sh("exportfs", "-u", f"127.0.0.1:{merged}")


def seed(lower):
    os.makedirs(f"{lower}/d", exist_ok=True)
    for name, text in (("a", "lower\n"), ("gone", "gone\n"), ("d/f", "f\n")):
        with open(f"{lower}/{name}", "w") as f:
            f.write(text)


def main():
    ceph, local = sys.argv[1], sys.argv[2]
    base = f"{ceph}/union-probe-{os.getpid()}"
    os.makedirs(base)
    seed(f"{base}/lower")
    seed(f"{local}/lower")
    fs_ops(base)
    # 1. all on CephFS, as union=server with ganesha-ceph would need it
    if mount_union("overlay: lower+upper+work on CephFS, index=on,nfs_export=on",
                   f"{base}/lower", f"{base}/upper", f"{base}/work", f"{base}/merged"):
        union_ops("union ops (CephFS upper)", f"{base}/merged")
        knfsd_export("knfsd (CephFS upper)", f"{base}/merged", "/mnt/nfs-a")
        sh("umount", f"{base}/merged")
    # 2. the same without oneroot's options: is it the options or the upper itself?
    if mount_union("overlay: lower+upper+work on CephFS, no options",
                   f"{base}/lower", f"{base}/upper2", f"{base}/work2", f"{base}/merged2",
                   options=""):
        union_ops("union ops (CephFS upper, no options)", f"{base}/merged2")
        sh("umount", f"{base}/merged2")
    # 3. lower on CephFS, upper local (ext4): the server-local-upper variant
    if mount_union("overlay: lower on CephFS, upper+work on local ext4, index=on,nfs_export=on",
                   f"{base}/lower", f"{local}/upper", f"{local}/work", f"{local}/merged"):
        union_ops("union ops (CephFS lower, ext4 upper)", f"{local}/merged")
        knfsd_export("knfsd (CephFS lower, ext4 upper)", f"{local}/merged", "/mnt/nfs-b")
        sh("umount", f"{local}/merged")
    # 4. CephFS itself through knfsd (the kernel client is exportable)
    knfsd_export("knfsd (plain CephFS dir)", f"{base}/lower", "/mnt/nfs-c")


main()
