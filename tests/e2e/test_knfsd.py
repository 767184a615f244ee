"""The production path (issue 11): kernel nfsd in a Debian server VM whose own `/` is the image,
and the seed's two `root=` lines, verbatim, booting nodes from it.

One server VM for the module (`oneroot.ops.labserver`: the cached disk of
`oneroot.ops.serverimage`, `oneroot init --nfs-server knfsd --image-root /`, `oneroot serve`
driven over SSH), three nodes, two rounds of boots:
  round 1  node01 (`…;node01;rw`) writes /root/persist and deletes /etc/issue, then
           `systemctl reboot`s; node02 (`…;node02;ro;tmpfs`) writes /root/ephemeral and tries
           to read what it must not: the server's shadow, /root and SSH host key through its
           root, and node01's layer through raw NFS mounts of the export paths.
  round 2  node01 still has its file and its deletion; node02's write is gone.
node03 is a server-mode node (`union=server`) of an image oneroot made: one NFS mount, no
fuse-overlayfs, its write and delete kept across its reboot. That image lives where `image
create` puts images, in oneroot's home (`HOME/images/small`, on a filesystem of its own), which
the view empties: node02 (client mode) mounts it raw over NFSv4 by its own path and reads its
/sbin/init through the image's bind at its junction in the view. Then forged file handles
from node02's address, with the layer exports as rendered (`subtree_check`) and without it,
and the same through an image directory on the server's own `/` (TINY, node02's image at the
end) and into node01's layer through node02's layer exported at its real path (no view of
`/`): `subtree_check` as rendered, read without it; node03's image, a disk of its own, stays
`no_subtree_check`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oneroot.initramfs.kernel import Kernel
from oneroot.lab.qemu import BOOT_FAILURES
from oneroot.model import NfsServerKind, Settings, resolve_cluster
from oneroot.model.paths import Paths
from oneroot.nfs.view import read_mounts
from oneroot.ops.images import LAB_MODULES, create_image
from oneroot.ops.labserver import VmServerLab
from oneroot.ops.nfs_serving import nfs_plan
from oneroot.ops.serverimage import image_disk
from oneroot.testing.cache import suite_cache_dir
from oneroot.testing.inventory import make_inventory
from oneroot.testing.labprobe import PROBE_LIB, PROBE_PATH, PROBE_UNIT, WANTS_PROBE, probe_values
from oneroot.testing.nfs3raw import FILEID_INO32_GEN_PARENT, knfsd_handle, knfsd_raw_handle

pytestmark = pytest.mark.e2e

BOOT_TIMEOUT = 600
SEED = {
    "node01": "10.0.0.1:/:ro;10.0.0.1:/var/state/systems/node01;rw",
    "node02": "10.0.0.1:/:ro;10.0.0.1:/var/state/systems/node02;ro;tmpfs",
}
NODES = ("node01", "node02")
# Server mode: oneroot refuses a server-side union over the live `/` (overlayfs forbids
# changing a lower layer under a mounted union), so node03's image is a directory oneroot
# made (`image create` on the host, carried in as the server VM's second disk, mounted where
# `image create` puts images: in HOME, which the view empties but for its junction).
UNION_NODE = "node03"
UNION_GROUP = "u03"
SMALL = "/var/lib/oneroot/images/small"
EXPORTS = "/etc/exports.d/oneroot.exports"
VIEW = "/var/lib/oneroot/views/default"
NODE01_SECRET = "node01-layer-secret"
SERVER_SECRET = "server-root-secret"

# Round 1 and 2 of node01 and node02 (@NODE@, @SMALL@ filled in): what each sees and may not.
PROBE = Path(__file__).with_name("knfsd_probe.sh").read_text()


@pytest.fixture(scope="module")
def vmlab(tmp_path_factory: pytest.TempPathFactory, node_kernel: Kernel
          ) -> Iterator[VmServerLab]:
    started = time.monotonic()
    workdir = tmp_path_factory.mktemp("knfsd")
    small = create_image(None, "small", dest_dir=workdir / "images", cache_dir=suite_cache_dir(),
                         kernel_modules_dir=node_kernel.modules_dir, modules=LAB_MODULES)
    lab = VmServerLab(workdir=workdir, cache_dir=suite_cache_dir(), progress=print,
                      extra_disks=(image_disk(small.root, workdir / "small.img"),))
    lab.prepare()
    print(f"server disk and image ready in {time.monotonic() - started:.0f} s")
    try:
        lab.start()
        print(f"server VM up (SSH) at {time.monotonic() - started:.0f} s")
        lab.setup(nodes=1)
        lab.oneroot("node", "add", "node02", "--mac", "52:54:00:0e:00:02", "--ip",
                    "10.0.0.13", "--ephemeral")
        lab.ssh(f"mkdir -p {SMALL} && mount -o ro /dev/vdb {SMALL}")
        lab.oneroot("image", "use", SMALL, "--name", "small")
        # node03's union: its layer over a group layer of its own (UNION_GROUP) and SMALL
        lab.oneroot("group", "add", UNION_GROUP, "--set", "group_layer=true")
        lab.oneroot("node", "add", UNION_NODE, "--mac", "52:54:00:0e:00:03", "--ip",
                    "10.0.0.14", "--group", "default", "--group", UNION_GROUP,
                    "--set", "union=server", "--set", "image=small")
        lab.serve()
        print(f"oneroot serve up at {time.monotonic() - started:.0f} s")
        # serve made the layer; `overlay put` unmounts node03's union around the edit
        install_probe(lab, UNION_NODE, UNION_PROBE)
        yield lab
    finally:
        lab.stop()


def install_probe(lab: VmServerLab, node: str, script: str) -> None:
    lab.put_many(node, {
        PROBE_PATH: (script, "0755"),
        "/etc/systemd/system/oneroot-probe.service": (PROBE_UNIT, "0644"),
        "/etc/systemd/system/multi-user.target.d/oneroot-probe.conf": (WANTS_PROBE, "0644")})


# A node's initramfs that gave up opens a shell (`oneroot: shell at stage switch_root ...`):
# nothing more comes, so fail at once instead of after BOOT_TIMEOUT.
NODE_FAILURES = re.compile(f"{BOOT_FAILURES.pattern}|oneroot: shell at stage")


def wait_probe(lab: VmServerLab, node: str, *, timeout: float) -> dict[str, list[str]]:
    """Wait for `PROBE DONE` and the VM's exit; the probe's values."""
    vm = lab.vms[node]
    try:
        vm.wait_for(r"PROBE DONE", timeout=timeout, fail_on=NODE_FAILURES)
        vm.wait_powered_off(timeout=180)
    except Exception:
        print(vm.serial_text()[-8000:])
        print(lab.serve_log()[-3000:])
        raise
    print(f"{node}: probe done, VM ended {vm.elapsed():.1f}s after power-on")
    return probe_values(vm.serial_text())


def root_line(lab: VmServerLab, node: str) -> str:
    out = lab.oneroot("node", "show", node).stdout
    return next(line.split(None, 1)[1].strip() for line in out.splitlines()
                if line.startswith("root="))


def test_seed_lines_are_rendered_verbatim(vmlab: VmServerLab) -> None:
    for node, line in SEED.items():
        assert root_line(vmlab, node) == line
    exports = vmlab.ssh("exportfs -v").stdout
    print(exports)
    # The view is the NFSv4 root, without crossmnt; each layer bound in it, to its node alone.
    assert "/var/lib/oneroot/views/default\n\t\t10.0.0.0/24(" in exports
    view_opts = exports.split("/var/lib/oneroot/views/default\n", 1)[1].split("\n", 1)[0]
    assert "fsid=0" in view_opts and "crossmnt" not in view_opts and ",ro," in view_opts
    node01 = exports.split("/var/lib/oneroot/views/default/var/state/systems/node01\n", 1)[1]
    assert node01.split("\n", 1)[0].strip().startswith("10.0.0.12(")
    # An image in HOME: bound at its junction and exported there, as at its real path
    # (read-only, to the subnet: version 1), and no more at its real path.
    small = exports.split(f"/var/lib/oneroot/views/default{SMALL}\n", 1)[1]
    assert small.split("\n", 1)[0].strip().startswith("10.0.0.0/24(")
    assert ",ro," in small.split("\n", 1)[0] and f"\n{SMALL}\n" not in exports
    # a disk of its own (all a forged handle could name is the image): no subtree check
    assert ",no_subtree_check," in small.split("\n", 1)[0]
    bound = vmlab.ssh(f"findmnt -n -o SOURCE /var/lib/oneroot/views/default{SMALL}").stdout
    assert bound.strip() == "/dev/vdb", bound


UNION_PROBE = "#!/bin/bash\n" + PROBE_LIB + r"""
say node=node03 root_fstype="$(findmnt -n -o FSTYPE /)"
say fuse_procs="$(fuse_pids | wc -l)" nfs_mounts="$(findmnt -n -t nfs,nfs4 | wc -l)"
if [ -e /root/persist ]; then
  say persist="$(tr ' ' _ < /root/persist)"
  if [ -e /etc/issue ]; then say issue=present; else say issue=gone; fi
  say DONE
  systemctl poweroff
else
  echo "written on node03" > /root/persist
  if rm /etc/issue; then say rm=ok; else say rm=failed; fi
  sync
  say DONE
  systemctl reboot
fi
"""


def test_seed_lines_boot_and_isolate(vmlab: VmServerLab, tmp_path: Path) -> None:
    lab = vmlab
    lab.ssh(f"echo {SERVER_SECRET} > /root/secret && echo 1 > /etc/oneroot-e2e-round")
    server_key = lab.ssh("sha256sum /etc/ssh/ssh_host_ed25519_key | cut -c1-64").stdout.strip()
    lab.put("node01", "/etc/node01-secret", NODE01_SECRET + "\n")
    for node in NODES:
        install_probe(lab, node, PROBE.replace("@NODE@", node).replace("@SMALL@", SMALL))
    for node in (*NODES, UNION_NODE):
        lab.boot(node)
    p1, p2, p3 = (wait_probe(lab, node, timeout=BOOT_TIMEOUT) for node in (*NODES, UNION_NODE))
    print(p1, p2, p3, sep="\n")
    # server mode: one NFS mount (its union, made on the server), no fuse-overlayfs
    assert p3["root_fstype"] == ["nfs4"] and p3["nfs_mounts"] == ["1"]
    assert p3["fuse_procs"] == ["0"] and p3["rm"] == ["ok"]
    assert p1["fuse_procs"] == ["1"]
    assert p1["node"] == ["node01"] and p1["round"] == ["1"] and p1["rm"] == ["ok"]
    assert p1["root_fstype"] == ["fuse.@fuse-overlayfs"]
    assert p2["root_fstype"] == ["overlay"]
    assert p1["persist"] == ["none"] and p1["issue"] == ["present"]
    assert p1["ls_root"] == ["ok"] == p2["ls_root"]
    # node02 reads none of the server's secrets through its root or a raw mount of `/`.
    assert p2["shadow"] == ["missing"] and p2["server_secret"] == ["unreadable"]
    assert p2["host_key"] != [server_key]
    assert p2["top_shadow"] == ["missing"] and p2["top_secret"] == ["unreadable"]
    # node01's layer: an empty junction over NFSv4, refused over NFSv3 at either path.
    assert p2["top_node01"] == ["0"]
    assert p2["raw_v4_secret"] == ["unreadable"]
    assert p2.get("raw_v4_entries", ["0"]) == ["0"]
    assert p2["raw_v3"] == ["refused"] and p2["raw_view"] == ["refused"]
    # node03's image, in HOME: bound at its junction in the view, its init an ELF file
    # (before, the junction was empty: `img_init=none`).
    assert p2["img_init"] == ["/lib/systemd/systemd"] and p2["img_init_elf"] == ["yes"]

    assert p1["tree"] == ["missing"] == p2["tree"]

    # Between the rounds: a package into the image, which is the server VM's own `/`.
    deb = _download("tree", tmp_path)
    lab.ssh("base64 -d > /tmp/tree.deb", input=base64.b64encode(deb.read_bytes()).decode())
    lab.oneroot("image", "exec", "default", "--", "dpkg", "-i", "/tmp/tree.deb")
    assert lab.ssh("test -x /usr/bin/tree && echo ok").stdout == "ok\n"
    # The view shows it at once, though round 1's `tree` lookups left negative entries.
    assert lab.ssh("test -x /var/lib/oneroot/views/default/usr/bin/tree && echo ok",
                   check=False).stdout == "ok\n"
    lab.ssh("echo 2 > /etc/oneroot-e2e-round")
    for node in (*NODES, UNION_NODE):
        lab.boot(node)
    p1, p2, p3 = (wait_probe(lab, node, timeout=BOOT_TIMEOUT) for node in (*NODES, UNION_NODE))
    print(p1, p2, p3, sep="\n")
    assert p3["persist"] == ["written_on_node03"] and p3["issue"] == ["gone"]
    assert p3["root_fstype"] == ["nfs4"] and p3["fuse_procs"] == ["0"]
    assert p1["round"] == ["2"] and p2["round"] == ["2"]
    assert p1["persist"] == ["written_on_node01"] and p1["issue"] == ["gone"]
    assert p2["ephemeral"] == ["none"] and p2["issue"] == ["present"]
    assert p1["tree"] == ["runs"] == p2["tree"]
    for node in NODES:  # installed once, in the image: in no node's layer
        found = lab.ssh(f"find /var/state/systems/{node} -xdev -name tree -path '*bin*'")
        assert found.stdout == ""


def _download(package: str, directory: Path) -> Path:
    """The Debian package file, fetched on the host (the VM has no route out)."""
    subprocess.run(["apt-get", "download", "-q", package], cwd=directory, check=True,
                   capture_output=True, timeout=300)
    return next(directory.glob(f"{package}_*.deb"))


def _inode_generation(lab: VmServerLab, path: str) -> tuple[int, int]:
    """What a leaked handle would carry: the file's inode and generation, read on the server."""
    ino = int(lab.ssh(f"stat -c %i {path}").stdout)
    generation = int(lab.ssh(f"lsattr -vd {path}").stdout.split()[0])
    return ino, generation


def _fsids(lab: VmServerLab) -> dict[str, int]:
    fsids = {}
    for line in lab.ssh(f"cat {EXPORTS}").stdout.splitlines():
        if line and not line.startswith("#"):
            options = line.split("(", 1)[1]
            fsids[line.split()[0]] = int(options.split("fsid=", 1)[1].split(",")[0].rstrip(")"))
    return fsids


@pytest.fixture(scope="module")
def forged(vmlab: VmServerLab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Handles made up the way knfsd makes them (hex, by name), for node02 to send: node02's
    own export root (the control: it must answer), node01's export root, inode 2 (the root of
    the server's disk) and leaked inode/generation pairs of a masked file, a file outside every
    export and node01's layer, each through node02's own export, the view and node01's."""
    lab = vmlab
    view = VIEW
    fsids = _fsids(lab)
    mine, theirs = (fsids[f"{view}/var/state/systems/{n}"] for n in ("node02", "node01"))
    assert fsids[view] == 0
    _secret_made_after_the_view(lab)
    leaked = {name: _inode_generation(lab, path) for name, path in LEAKED.items()}
    handles = {"own_root": knfsd_handle(mine), "node01_root": knfsd_handle(theirs),
               "ino2_own": knfsd_handle(mine, 2), "ino2_view": knfsd_handle(0, 2)}
    # overlayfs's own handle of a file the view shows; its last 8 bytes are ext4's fid
    ovl_type, ovl = _kernel_handle(lab, f"{view}/etc/passwd")
    assert ovl_type == OVL_FILEID_V1
    handles["passwd_view_ovl"] = knfsd_raw_handle(0, ovl_type, ovl)
    for name, (ino, gen) in leaked.items():
        handles[f"{name}_own"] = knfsd_handle(mine, ino, gen)
        handles[f"{name}_view"] = knfsd_handle(0, ino, gen)
        handles[f"{name}_node01"] = knfsd_handle(theirs, ino, gen)
        handles[f"{name}_view_ovl"] = knfsd_raw_handle(
            0, ovl_type, ovl[:-8] + struct.pack("<II", ino, gen))
    return {k: v.hex() for k, v in handles.items()}


def _kernel_handle(lab: VmServerLab, path: str) -> tuple[int, bytes]:
    """name_to_handle_at(2) of `path` on the server (what knfsd puts in a handle)."""
    code = ("import sys; from pathlib import Path; from oneroot.testing.nfs4raw import "
            "kernel_handle; t, h = kernel_handle(Path(sys.argv[1])); print(t, h.hex())")
    kind, fid = lab.ssh(f"/opt/oneroot/bin/python3 -c '{code}' {path}").stdout.split()
    return int(kind), bytes.fromhex(fid)


# overlayfs decodes a handle of a lower non-directory without a path check: what refuses a
# masked file's (the hidden shadow, the inventory below an emptied dir, a secret made in /root
# after the view was mounted) is the whiteout `oneroot.nfs.viewhandles` puts in the view's
# index for it (docs/security.md, "Forged file handles"). Without it these are read.
VIEW_DEFENCE = {"shadow_view_ovl", "inventory_view_ovl", "root_secret_view_ovl"}
OVL_FILEID_V1 = 0xF8
LEAKED = {"shadow": "/etc/shadow", "inventory": "/var/lib/oneroot/inventory.db",
          "node01_dir": "/var/state/systems/node01", "root_home": "/root",
          "root_secret": "/root/secret"}
NFS3ERR_STALE = 70


def _secret_made_after_the_view(lab: VmServerLab, *, timeout: float = 180) -> None:
    """/root/secret exists (the boot test writes it; alone, this writes it), and serve's
    rescan has blocked its handle since (`nfs.view.handles_blocked` in its log)."""
    if lab.ssh("test -e /root/secret && echo yes", check=False).stdout == "yes\n":
        return
    before = lab.serve_log().count("nfs.view.handles_blocked")
    lab.ssh(f"echo {SERVER_SECRET} > /root/secret")
    deadline = time.monotonic() + timeout
    while lab.serve_log().count("nfs.view.handles_blocked") == before:
        assert time.monotonic() < deadline, "serve's rescan did not block /root/secret"
        time.sleep(5)


# The raw client's namespaces: a node's address and MAC (the node is off).
CLIENTS = {"node02": ("10.0.0.13", "52:54:00:0e:00:02"),
           UNION_NODE: ("10.0.0.14", "52:54:00:0e:00:03")}


def _client_ns(lab: VmServerLab, node: str) -> str:
    """The lab client namespace holding `node`'s address and MAC, made on first use."""
    assert lab.lab is not None
    address, mac = CLIENTS[node]
    for netns in lab.lab.state.clients:
        shown = lab.lab.run_in_ns(["ip", "-4", "-o", "addr", "show", "eth0"], netns=netns)
        if f" {address}/" in shown.stdout:
            return netns
    client = lab.lab.add_client(f"{address}/24")
    lab.lab.run_in_ns(["ip", "link", "set", "eth0", "address", mac], netns=client.netns)
    return client.netns


def _attack(lab: VmServerLab, handles: dict[str, str], directory: Path,
            *flags: str, node: str = "node02") -> dict[str, Any]:
    """GETATTR/READDIR/LOOKUP/READ with each handle from `node`'s address and MAC (the node
    is off): serve pins each node's address to its MACs (another MAC is dropped before knfsd
    sees it); this is about knfsd's own checks. The NFS status of each answer (`--resolve`:
    the real handle of each `HEX/name/…` path instead, `oneroot.testing.nfs3raw`)."""
    assert lab.lab is not None
    wanted = directory / "handles.json"
    wanted.write_text(json.dumps(handles))
    done = lab.lab.run_in_ns([sys.executable, "-m", "oneroot.testing.nfs3raw", *flags,
                              "10.0.0.1", str(wanted)], netns=_client_ns(lab, node),
                             timeout=120)
    results: dict[str, Any] = json.loads(done.stdout)
    print(json.dumps(results))
    return results


@contextlib.contextmanager
def _subtree_unchecked(lab: VmServerLab, path: str) -> Iterator[None]:
    """The export at `path`, rendered `subtree_check` (asserted), applied `no_subtree_check`
    instead for the block; then the rendered exports are applied again."""
    line = next(li for li in lab.ssh(f"cat {EXPORTS}").stdout.splitlines()
                if li.startswith(path + " "))
    client, options = line.split()[1].rstrip(")").split("(")
    unchecked = ["no_subtree_check" if o == "subtree_check" else o for o in options.split(",")]
    assert "subtree_check" in options.split(",") and "no_subtree_check" in unchecked
    lab.ssh(f"exportfs -i -o {','.join(unchecked)} {client}:{path}")
    try:
        assert "no_subtree_check" in lab.ssh("exportfs -v").stdout.split(path, 1)[1][:300]
        yield
    finally:
        lab.ssh("exportfs -ra")


def _answered(results: dict[str, dict[str, int]]) -> set[str]:
    return {name for name, procs in results.items() if 0 in procs.values()}


def test_forged_handles_are_refused(vmlab: VmServerLab, forged: dict[str, str],
                                    tmp_path: Path) -> None:
    """node02's own export root and a file the view shows answer (the client works); every
    ext4 handle is refused, through any export, and so are overlayfs handles of masked files
    through the view (VIEW_DEFENCE: stale, by the view's index whiteouts)."""
    results = _attack(vmlab, forged, tmp_path)
    assert results["own_root"]["getattr"] == 0 and results["passwd_view_ovl"]["read"] == 0
    assert _answered(results) == {"own_root", "passwd_view_ovl"}
    for name in VIEW_DEFENCE:
        assert set(results[name].values()) == {NFS3ERR_STALE}, (name, results[name])


def test_forged_handles_escape_without_subtree_check(vmlab: VmServerLab,
                                                     forged: dict[str, str],
                                                     tmp_path: Path) -> None:
    """The defence is real: node02's export applied with `no_subtree_check` instead, the same
    handles through it reach the whole server disk (inode 2, the shadow file, oneroot's
    inventory, node01's layer, /root). Then the rendered exports are applied again."""
    lab = vmlab
    with _subtree_unchecked(lab, f"{VIEW}/var/state/systems/node02"):
        results = _attack(lab, forged, tmp_path)
    escaped = {f"{name}_own" for name in ("ino2", *LEAKED)}
    assert _answered(results) == {"own_root", "passwd_view_ovl"} | escaped
    assert results["ino2_own"]["readdir"] == 0 and results["shadow_own"]["read"] == 0
    assert _answered(_attack(lab, forged, tmp_path)) == {"own_root", "passwd_view_ovl"}


def _spelled_otherwise(forged: dict[str, str]) -> dict[str, str]:
    """The view's masked-file handles as the index whiteouts do not spell them (the kernel's
    decoder accepts both; `KNOWN_SPELLING_GAP` of tests/integration/test_nfs_view_handles.py):
    `ANY_ENDIAN` set in the flags, and 4 bytes appended (`fb.len` + 4). The overlayfs handle
    starts after knfsd's 8 bytes: 3 of padding, then version, magic, len, flags."""
    handles = {}
    for name in VIEW_DEFENCE:
        raw = bytes.fromhex(forged[name])
        head, fh = raw[:8], raw[8:]
        handles[f"{name}_flag"] = head + fh[:6] + bytes([fh[6] | 2]) + fh[7:]
        handles[f"{name}_longer"] = head + fh[:5] + bytes([fh[5] + 4]) + fh[6:] + bytes(4)
    return {k: v.hex() for k, v in handles.items()}


def test_the_view_is_all_squash(vmlab: VmServerLab, forged: dict[str, str],
                                tmp_path: Path) -> None:
    """Spelled otherwise, a masked file's handle passes the index whiteouts: what refuses its
    READ is the view's `all_squash` (docs/security.md), so only a world-readable masked file
    (a 0644 file made in /root) is read. Re-exported `no_root_squash` (as before), every one
    is read: the defence is real. Then the rendered exports are applied again."""
    lab = vmlab
    spelled = _spelled_otherwise(forged)
    world = {name for name in VIEW_DEFENCE
             if int(lab.ssh(f"stat -c %a {LEAKED[name.removesuffix('_view_ovl')]}").stdout,
                    8) & 0o004}
    read = {n for n, procs in _attack(lab, spelled, tmp_path).items() if procs["read"] == 0}
    assert read == {n for n in spelled if n.rsplit("_", 1)[0] in world}
    view = "/var/lib/oneroot/views/default"
    line = next(li for li in lab.ssh(f"cat {EXPORTS}").stdout.splitlines()
                if li.startswith(view + " "))
    client, options = line.split()[1].rstrip(")").split("(")
    squashed = options.split(",")
    assert "all_squash" in squashed and "anonuid=65534" in squashed
    unsquashed = ["no_root_squash" if o == "all_squash" else o for o in squashed
                  if not o.startswith(("anonuid=", "anongid="))]
    lab.ssh(f"exportfs -i -o {','.join(unsquashed)} {client}:{view}")
    try:
        results = _attack(lab, spelled, tmp_path)
    finally:
        lab.ssh("exportfs -ra")
    assert {n for n, procs in results.items() if procs["read"] == 0} == set(spelled)


# issue 11 item 4 for images: an image directory on the server VM's own `/`, where `image
# create` puts images (HOME, no filesystem of its own with knfsd), node02's image: version 1,
# exported to the subnet. Its /etc/motd is hard-linked to a file outside it, as a version's
# files are to the version before (`cp -al`).
TINY = "/var/lib/oneroot/images/tiny"


@pytest.fixture(scope="module")
def tiny(vmlab: VmServerLab) -> Iterator[dict[str, str]]:
    """Handles with the fsid of TINY's export (at its junction in the view): its root (the
    control), inode 2 (the root of the server's disk), /etc/shadow's inode and generation
    (read on the server, as leaked), the same with TINY's own directory as the parent
    (`subtree_check`'s connectable form), and TINY/etc/motd by LOOKUP (a real handle)."""
    lab = vmlab
    lab.ssh(f"mkdir -p {TINY}/etc {TINY}.old && echo tiny > {TINY}.old/motd && "
            f"ln {TINY}.old/motd {TINY}/etc/motd")
    lab.oneroot("image", "use", TINY, "--name", "tiny", "--init-system", "systemd")
    lab.oneroot("node", "set", "node02", "--set", "image=tiny")
    deadline = time.monotonic() + 180
    while f"{VIEW}{TINY}\n" not in lab.ssh("exportfs -v").stdout:  # serve's next apply
        assert time.monotonic() < deadline, lab.serve_log()[-3000:]
        time.sleep(3)
    fsid = _fsids(lab)[VIEW + TINY]
    ino, gen = _inode_generation(lab, "/etc/shadow")
    parent = _inode_generation(lab, TINY)
    yield {"tiny_root": knfsd_handle(fsid).hex(),
           "tiny_motd": f"{knfsd_handle(fsid).hex()}/etc/motd",
           "ino2_tiny": knfsd_handle(fsid, 2).hex(),
           "shadow_tiny": knfsd_handle(fsid, ino, gen).hex(),
           "shadow_tiny_parent": knfsd_raw_handle(fsid, FILEID_INO32_GEN_PARENT, struct.pack(
               "<IIII", ino, gen, *parent)).hex()}
    lab.oneroot("node", "set", "node02", "--unset", "image")


def test_forged_handles_through_an_image_dir_are_refused(vmlab: VmServerLab,
                                                         tiny: dict[str, str],
                                                         tmp_path: Path) -> None:
    """TINY is on the server's `/`, so its export is `subtree_check`: every forged handle of a
    file outside it is refused; its own files still read, by the handle knfsd gives for them,
    also once the only cached link of the hard-linked motd is the one outside the export."""
    lab = vmlab
    assert ",subtree_check," in next(li for li in lab.ssh(f"cat {EXPORTS}").stdout.splitlines()
                                     if li.startswith(f"{VIEW}{TINY} "))
    results = _attack(lab, tiny, tmp_path)
    assert _answered(results) == {"tiny_root", "tiny_motd"}
    assert results["tiny_motd"]["read"] == 0
    [motd] = _attack(lab, {"motd": tiny["tiny_motd"]}, tmp_path, "--resolve").values()
    assert isinstance(motd, str), motd  # a LOOKUP's status otherwise
    lab.ssh(f"sync; echo 2 > /proc/sys/vm/drop_caches; cat {TINY}.old/motd")
    assert _attack(lab, {"motd": motd}, tmp_path)["motd"]["read"] == 0


def test_forged_handles_through_an_image_dir_escape_without_subtree_check(
        vmlab: VmServerLab, tiny: dict[str, str], tmp_path: Path) -> None:
    """The defence is real: TINY's export applied `no_subtree_check` (as it was rendered
    before), the same handles read the server's disk: inode 2 and /etc/shadow."""
    with _subtree_unchecked(vmlab, VIEW + TINY):
        results = _attack(vmlab, tiny, tmp_path)
    assert {"ino2_tiny", "shadow_tiny", "shadow_tiny_parent"} <= _answered(results)
    assert results["ino2_tiny"]["readdir"] == 0 and results["shadow_tiny"]["read"] == 0
    assert _answered(_attack(vmlab, tiny, tmp_path)) == {"tiny_root", "tiny_motd"}


# issue 11 item 4 without a view of `/` (images oneroot made, the state dir a filesystem of its
# own): node layers are exported at their real paths, all on one filesystem. node02's layer is
# exported at its real path as such a config renders it on this server (`_rendered_unviewed`),
# beside the view; node02 MOUNTs that path (NFSv3) and forges handles with its fsid (knfsd's
# own: the filesystem's UUID and the export's inode). HELD: a file of node02's own layer.
LAYERS, NFS3ERR_ACCES = "/var/state/systems", 13
LAYER_SECRET, HELD = (f"{LAYERS}/node01/upper/etc/e2e-layer-secret",
                      f"{LAYERS}/node02/upper/etc/e2e-held")


def _rendered_unviewed(lab: VmServerLab, directory: Path) -> str:
    """node02's export options in the exports a knfsd config without a view of `/` gets from
    `nfs_plan`, on the server VM's mount table."""
    mountinfo = directory / "mountinfo"
    mountinfo.write_text(lab.ssh("cat /proc/self/mountinfo").stdout)
    inv = make_inventory(image_root="/srv/images/bookworm",
                         settings=Settings(nfs_server=NfsServerKind.KNFSD))
    plan = nfs_plan(resolve_cluster(inv), Paths(home=directory), kind=NfsServerKind.KNFSD,
                    running=(), mounts=read_mounts(mountinfo))
    line = next(li for li in plan.text.splitlines() if li.startswith(f"{LAYERS}/node02 "))
    return line.split("(", 1)[1].rstrip(")")


def _export_node02(lab: VmServerLab, options: str) -> None:
    lab.ssh(f"exportfs -i -o {options} 10.0.0.13:{LAYERS}/node02")
    shown = ("\n" + lab.ssh("exportfs -v").stdout).split(f"\n{LAYERS}/node02", 1)[1]
    shown = shown.split("\n/", 1)[0]  # up to the next export
    assert ("no_subtree_check" in shown) == ("no_subtree_check" in options), shown


@pytest.fixture(scope="module")
def layer_handles(vmlab: VmServerLab, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[tuple[str, dict[str, str]]]:
    """The rendered options and, through node02's real-path export: its root (the control),
    inode 2, node01's layer dir and a file in it by inode/generation (read on the server, as
    leaked), the file with its directory as forged parent (`subtree_check`'s form)."""
    lab = vmlab
    options = _rendered_unviewed(lab, tmp_path_factory.mktemp("unviewed"))
    assert options == "rw,sync,no_root_squash,subtree_check"
    lab.ssh(f"echo {NODE01_SECRET} > {LAYER_SECRET} && echo held > {HELD}")
    _export_node02(lab, options)
    own = f"@{LAYERS}/node02"

    def forged(kind: int, *words: int) -> str:
        return f"{own}#{kind}:{struct.pack(f'<{len(words)}I', *words).hex()}"

    secret = _inode_generation(lab, LAYER_SECRET)
    yield options, {
        "own_root": own, "ino2": forged(1, 2, 0),
        "node01_dir": forged(1, *_inode_generation(lab, f"{LAYERS}/node01")),
        "node01_secret": forged(1, *secret),
        "node01_secret_parent": forged(FILEID_INO32_GEN_PARENT, *secret, *_inode_generation(
            lab, f"{LAYERS}/node01/upper/etc"))}
    lab.ssh(f"exportfs -u 10.0.0.13:{LAYERS}/node02; rm -f {LAYER_SECRET} {HELD}; exportfs -ra")


def test_forged_handles_into_another_layer_are_refused(
        vmlab: VmServerLab, layer_handles: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    """As rendered (`subtree_check`): node02's own root answers, nothing else; then the
    escape control: the same export `no_subtree_check` (as rendered before) reads node01's
    layer and lists the server's disk."""
    lab, (options, handles) = vmlab, layer_handles
    results = _attack(lab, handles, tmp_path)
    assert _answered(results) == {"own_root"}
    for name in set(handles) - {"own_root"}:
        assert set(results[name].values()) <= {NFS3ERR_STALE, NFS3ERR_ACCES}, results[name]
    _export_node02(lab, options.replace("subtree_check", "no_subtree_check"))
    try:
        results = _attack(lab, handles, tmp_path)
    finally:
        _export_node02(lab, options)
    assert _answered(results) == set(handles)
    assert results["node01_dir"]["readdir"] == 0 and results["node01_secret"]["read"] == 0
    assert results["ino2"]["readdir"] == 0


def test_handles_got_before_subtree_check_go_stale(
        vmlab: VmServerLab, layer_handles: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    """What a node that booted on its layer while it was `no_subtree_check` holds once the
    export is `subtree_check` (why `nfs apply` names it to reboot): a file's old handle
    (inode and generation alone) is STALE once the server's dcache dropped the file; a
    directory's still answers (knfsd reconnects it through `..`); a fresh LOOKUP gives a
    handle with the parent, which reads."""
    lab, (options, _), own = vmlab, layer_handles, f"@{LAYERS}/node02"
    paths = {"file": f"{own}#{HELD.removeprefix(LAYERS + '/node02')}", "dir": f"{own}#/upper/etc"}
    _export_node02(lab, options.replace("subtree_check", "no_subtree_check"))
    try:
        old = _attack(lab, paths, tmp_path, "--resolve")
    finally:
        _export_node02(lab, options)
    assert bytes.fromhex(old["file"])[3] == 1, old  # FILEID_INO32_GEN: no parent
    deadline = time.monotonic() + 120
    while True:
        lab.ssh("sync; echo 2 > /proc/sys/vm/drop_caches")
        results = _attack(lab, old, tmp_path)
        if results["file"]["read"] != 0 or time.monotonic() > deadline:
            break
        time.sleep(2)  # knfsd's file cache holds a file it read for a few seconds
    assert set(results["file"].values()) == {NFS3ERR_STALE}, results
    assert results["dir"]["getattr"] == 0 and results["dir"]["readdir"] == 0
    new = _attack(lab, paths, tmp_path, "--resolve")
    assert bytes.fromhex(new["file"])[3] == FILEID_INO32_GEN_PARENT, new
    assert _attack(lab, {"file": new["file"]}, tmp_path)["file"]["read"] == 0


# Server-side unions (`union=server`) under knfsd: node03's root is an overlayfs of its own
# layer (upper) over its group layer (UNION_GROUP) and SMALL (a disk of its own), exported with
# `fsid=` and `no_subtree_check` (overlayfs makes no connectable handles). overlayfs decodes
# its handles itself: an UPPER handle of a non-directory anywhere on the upper's filesystem
# (`ovl_acceptable` checks directories only), a LOWER one anywhere on the filesystem of a lower
# layer (matched by the UUID in the handle). So each layer of a union node must be a
# filesystem that holds nothing the node may not read (`ops.union_fs`). From node03's
# address: its real handles of /etc/hostname (upper: written there by oneroot) and
# /etc/passwd (lower: the image), the ext4 fid inside replaced (and the UUID, for the
# filesystem the target is on). ext4 skips the generation check for a generation of 0.
OVL_UPPER = 0x04  # OVL_FH_FLAG_PATH_UPPER
UNION_TARGET = f"{LAYERS}/node01/upper/etc/e2e-union-target"
# What node03 may read: its own export root, its files by the handles knfsd gave, and a
# gen-0 guess of its own file's inode (ext4's generation check skipped: a guess suffices).
UNION_CONTROLS = {"own_root", "hostname", "passwd", "hostname_gen0"}


def _fs_uuid(lab: VmServerLab, path: str) -> bytes:
    """The UUID of the filesystem `path` is on (overlayfs puts it in its handles)."""
    source = lab.ssh(f"findmnt -n -v -o SOURCE -T {path}").stdout.strip()
    return bytes.fromhex(lab.ssh(f"blkid -o value -s UUID {source}").stdout.strip()
                         .replace("-", ""))


def _ovl_forged(real: str, ino: int, generation: int, *, uuid: bytes | None = None) -> str:
    """knfsd's handle `real` (8 bytes, then overlayfs's: 3 of padding, version, magic 0xfb,
    len, flags, type, the UUID, ext4's inode and generation) naming another ext4 inode."""
    fh = bytearray(bytes.fromhex(real))
    head, ovl = fh[:8], fh[8:]
    assert ovl[4] == 0xFB and ovl[7] == 1 and len(ovl) == 32, real  # ext4 INO32_GEN
    if uuid is not None:
        ovl[8:24] = uuid
    ovl[24:32] = struct.pack("<II", ino, generation)
    return (head + ovl).hex()


@pytest.fixture(scope="module")
def union_handles(vmlab: VmServerLab, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[dict[str, str]]:
    lab = vmlab
    export = next(p for p in _fsids(lab) if p.endswith(f"/{UNION_NODE}/merged"))
    lab.ssh(f"echo {NODE01_SECRET} > {UNION_TARGET} && chmod 600 {UNION_TARGET}")
    real = _attack(lab, {"hostname": f"@{export}#/etc/hostname",
                         "passwd": f"@{export}#/etc/passwd"},
                   tmp_path_factory.mktemp("union"), "--resolve", node=UNION_NODE)
    upper, lower = real["hostname"], real["passwd"]
    assert isinstance(upper, str) and isinstance(lower, str), real
    assert bytes.fromhex(upper)[8 + 6] & OVL_UPPER and not bytes.fromhex(lower)[8 + 6] & OVL_UPPER
    own_ino, _ = _inode_generation(lab, f"{LAYERS}/{UNION_NODE}/upper/etc/hostname")
    handles = {"own_root": f"@{export}", "hostname": upper, "passwd": lower,
               "hostname_gen0": _ovl_forged(upper, own_ino, 0)}
    targets = {name: (*_inode_generation(lab, path), _fs_uuid(lab, path))
               for name, path in (("node01", UNION_TARGET), ("shadow", "/etc/shadow"))}
    # The lower ones first: sent after the upper ones of the same files, they were STALE even
    # against the old layout (likely: overlayfs still held those files' inodes as upper ones,
    # nfsd's file cache keeping them, and `ovl_verify_inode` refused the lower alias).
    for name, (ino, gen, fs) in targets.items():
        handles[f"lower_{name}_fs"] = _ovl_forged(lower, ino, gen, uuid=fs)
        handles[f"lower_{name}_fs_gen0"] = _ovl_forged(lower, ino, 0, uuid=fs)
    for name, (ino, gen, fs) in targets.items():
        handles[f"upper_{name}"] = _ovl_forged(upper, ino, gen)
        handles[f"upper_{name}_gen0"] = _ovl_forged(upper, ino, 0)
        handles[f"upper_{name}_fs"] = _ovl_forged(upper, ino, gen, uuid=fs)
    yield handles
    lab.ssh(f"rm -f {UNION_TARGET}")


def test_forged_handles_through_a_server_union_are_refused(
        vmlab: VmServerLab, union_handles: dict[str, str], tmp_path: Path) -> None:
    """Every forged overlayfs handle from node03 is refused: of node01's layer and of the
    server's /etc/shadow, as upper or lower handles, with their real generation or 0, with
    node03's layer's UUID or their own filesystem's. Its own files answer (the controls).
    Against the layout before `ops.union_fs` (node03's layer and its group layer
    directories of the state filesystem, here the server's `/`), the upper and the lower
    ones read node01's file and the shadow (docs/notes/2026-12-07-f/union-knfsd-handles.md)."""
    lab = vmlab
    results = _attack(lab, union_handles, tmp_path, node=UNION_NODE)
    for name, procs in sorted(results.items()):
        print(f"{name:24} {procs}")
    assert _answered(results) == UNION_CONTROLS
    assert all(results[n]["read"] == 0 for n in UNION_CONTROLS - {"own_root"})
    own = _fs_uuid(lab, f"{LAYERS}/{UNION_NODE}/upper")
    assert own not in {_fs_uuid(lab, UNION_TARGET), _fs_uuid(lab, "/etc/shadow")}
