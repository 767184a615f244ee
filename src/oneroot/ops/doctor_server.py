"""`oneroot doctor` on a real server: the network interface and its address, the state
filesystem rule (layers only, nosuid,nodev, quotas), the masked views' masks, and knfsd's state
(`nfsd` running, `exportfs -v` showing what oneroot applied). Reads only.
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from oneroot.errors import OnerootError
from oneroot.model.cluster import LayerFs, NfsServerKind, Settings
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster
from oneroot.nfs.knfsd import EXPORTS_FILE
from oneroot.nfs.view import (
    MountEntry,
    ViewSpec,
    filesystem_of,
    masks_of,
    mount_at,
    read_mounts,
)
from oneroot.nfs.view import shows as view_shows
from oneroot.nfs.viewhandles import exposed_by_handle
from oneroot.ops.doctor import Finding, Host, error, ok, warning
from oneroot.ops.imagefs import images_fs_problem, images_root, is_images_fs
from oneroot.ops.knfsd_subtree import read_export_lines, unchecked_on_shared_filesystems
from oneroot.ops.layerfs import is_layer_fs
from oneroot.ops.statefs import ALLOWED_TOP
from oneroot.ops.union_fs import union_layer_problems
from oneroot.render.cluster import needs_view


def server_checks(cluster: ResolvedCluster, paths: Paths, host: Host) -> list[Finding]:
    s = cluster.settings
    findings = [*check_interface(s), *check_state_fs(s)]
    findings += check_views(cluster, paths)
    findings += check_images_mounted(paths)
    if s.nfs_server is NfsServerKind.GANESHA:
        findings += check_ganesha_filesystems(cluster, paths)
    if s.nfs_server is NfsServerKind.KNFSD:
        findings += check_knfsd(host)
        findings += check_export_subtrees()
        findings += check_union_filesystems(cluster, paths)
    return findings


def check_union_filesystems(cluster: ResolvedCluster, paths: Paths,
                            mounts: list[MountEntry] | None = None) -> Iterator[Finding]:
    """knfsd: each layer of a `union=server` node is a filesystem holding nothing the node may
    not read: overlayfs decodes a forged handle anywhere on its layers' filesystems
    (`ops.union_fs`)."""
    from oneroot.ops.server_union import node_union_spec

    mounts = read_mounts() if mounts is None else mounts
    for name in sorted(cluster.union_nodes()):
        try:
            spec = node_union_spec(cluster, name)
        except OnerootError:
            continue  # nfs_plan refuses it (check_views / nfs apply say why)
        if not spec.node_dir.exists():
            continue  # not made yet: `nfs apply` makes it a filesystem of its own
        problems = union_layer_problems(cluster, paths, spec, mounts, fixable=True)
        if problems:
            yield error("union-fs", f"node {name}'s server-side union has "
                                    f"{'; '.join(problems)}, which holds more than that "
                                    "layer: through its union export the node reads any "
                                    "file there by a forged file handle",
                        "`oneroot nfs apply` moves the node's own and group layers to "
                        "filesystems of their own; mount one holding only the image at its "
                        "directory (or keep it in HOME/images on one), or set union=client")
        else:
            yield ok("union-fs", f"node {name}'s union layers are filesystems of their own")


# -- interface -----------------------------------------------------------------------------------

def interface_addresses(name: str) -> list[ipaddress.IPv4Interface] | None:
    """The IPv4 addresses on interface `name` (`ip -j addr`), or None if it does not exist."""
    proc = subprocess.run(["ip", "-j", "-4", "addr", "show", "dev", name], capture_output=True,
                          text=True, timeout=10, check=False, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        return None
    try:
        doc = json.loads(proc.stdout or "[]")
    except ValueError:
        return None
    if not doc:
        return None
    return [ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}")
            for link in doc for a in link.get("addr_info", []) if a.get("family") == "inet"]


def check_interface(s: Settings) -> list[Finding]:
    addresses = interface_addresses(s.interface)
    if addresses is None:
        return [error("interface", f"interface {s.interface} does not exist: DHCP, TFTP and "
                                   "NFS would serve nothing",
                      "`oneroot settings set interface=IFACE` (see `ip -br link`)")]
    if s.server_address not in [a.ip for a in addresses]:
        have = ", ".join(str(a) for a in addresses) or "no IPv4 address"
        return [error("interface", f"{s.interface} has {have}, not the server address "
                                   f"{s.server_address}",
                      f"`ip addr add {s.server_address}/{s.subnet.prefixlen} dev "
                      f"{s.interface}` (and make it permanent), or `oneroot settings set "
                      "server_address=ADDR`")]
    return [ok("interface", f"{s.interface} has {s.server_address}")]


# -- the state filesystem ------------------------------------------------------------------------

def mount_flags(path: Path) -> set[str]:
    """Per-mount flags (nosuid, nodev, ro…) of the mount at exactly `path`."""
    flags: set[str] = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[4] == str(path):
            flags = set(fields[5].split(","))
    return flags


def check_state_fs(s: Settings) -> Iterator[Finding]:
    """The layers' filesystem holds layers only (a forged handle for its root reaches
    nothing else), is nosuid,nodev, can enforce quotas; the state dir is 0700."""
    state = Path(s.state_dir)
    entry = filesystem_of(state)
    if entry is None or entry.mount_point == Path("/") or entry.mount_point in \
            [Path(p) for p in ("/var", "/var/lib", "/srv", "/home")]:
        where = entry.mount_point if entry else "?"
        yield error("state-fs", f"the state dir {state} is on the filesystem mounted at "
                                f"{where}, which holds more than layers: with knfsd, a node "
                                "that forges a file handle reads all of it",
                    "`oneroot init --state-device DEV` (or --state-image) gives the layers a "
                    "filesystem of their own")
        return
    mine = {PurePosixPath(d).relative_to(PurePosixPath(entry.mount_point)).parts[0]
            for d in (s.state_dir, s.group_dir)
            if PurePosixPath(d).is_relative_to(PurePosixPath(entry.mount_point))
            and PurePosixPath(d) != PurePosixPath(entry.mount_point)}
    others = sorted(set(os.listdir(entry.mount_point)) - mine - ALLOWED_TOP) \
        if state != entry.mount_point else []
    if others:
        yield error("state-fs", f"the state filesystem ({entry.mount_point}) holds more than "
                                f"layers: {', '.join(others[:5])}",
                    "move them off it: it must hold only the state and group dirs")
    else:
        yield ok("state-fs", f"layers on their own filesystem ({entry.fstype} at "
                             f"{entry.mount_point})")
    missing = {"nosuid", "nodev"} - mount_flags(entry.mount_point)
    if missing:
        yield error("state-fs", f"{entry.mount_point} is mounted without "
                                f"{', '.join(sorted(missing))}: a node's setuid file or device "
                                "node would act on the server",
                    f"`mount -o remount,nosuid,nodev {entry.mount_point}` and fix its fstab "
                    "line")
    if entry.fstype != "btrfs" and "prjquota" not in entry.options.split(","):
        yield warning("state-fs", "the state filesystem enforces no quotas: one node can fill "
                                  "it for all", "recreate it with `oneroot init --state-device`")
    mode = stat.S_IMODE(os.stat(state).st_mode) if state.is_dir() else 0o700
    if mode != 0o700:
        yield warning("state-fs", f"the state dir {state} is mode {mode:04o}, not 0700",
                      f"chmod 0700 {state}")


def check_images_mounted(paths: Paths) -> Iterator[Finding]:
    """HOME/images, once on a filesystem of its own, is exported only while that is mounted
    there (`oneroot serve` and `nfs apply` refuse otherwise)."""
    problem = images_fs_problem(paths)
    if problem is not None:
        yield error("images-fs", f"{problem}: serve and `oneroot nfs apply` refuse to export it",
                    "`oneroot nfs apply` mounts it again while ganesha is down (serve then "
                    "starts it); with ganesha up, restart `oneroot serve`")


# -- nfs-ganesha: one filesystem per export -----------------------------------------------------

def check_ganesha_filesystems(cluster: ResolvedCluster, paths: Paths) -> Iterator[Finding]:
    """nfs-ganesha has no subtree check: a node that forges a handle through one of its
    exports reads the whole filesystem that export is on (docs/security.md, "Forged file
    handles"). Layers are filesystems of their own with layer_fs=own, and so is HOME/images
    (ops.imagefs); any other image exported as it is must be too."""
    s = cluster.settings
    if s.layer_fs is LayerFs.SHARED:
        yield error("ganesha-fs", "layer_fs=shared: a node that forges a file handle through "
                                  "its own export reads every other layer and everything on "
                                  "their filesystem", "`oneroot settings set layer_fs=own`, "
                                  "then `oneroot nfs apply` with the nodes down")
    else:
        loose = sorted(n for n in cluster.nodes
                       if not is_layer_fs(Path(s.state_dir) / n))
        if loose:
            yield warning("ganesha-fs", f"{len(loose)} node layer(s) not yet a filesystem of "
                                        f"their own: {', '.join(loose[:5])}",
                          "`oneroot nfs apply` (or start `oneroot serve`)")
    images = images_root(paths) if is_images_fs(paths) else None
    for name, image in sorted(cluster.images.items()):
        if image.live or needs_view(image.root, state_dir=s.state_dir, group_dir=s.group_dir):
            continue  # exported through its masked view
        for root in sorted({image.root, *(v.root for v in image.versions)}):
            entry = filesystem_of(Path(root))
            if entry is not None and entry.mount_point not in (Path(root), images):
                yield error("ganesha-fs", f"image {name} ({root}) is exported from the "
                                          f"filesystem at {entry.mount_point}, which holds "
                                          "more than the image: a node that forges a file "
                                          "handle through it reads all of that filesystem",
                            f"mount a filesystem of its own at {root}, keep it under "
                            f"{images_root(paths)} (its own filesystem with layer_fs=own: "
                            "`oneroot nfs apply` with the nodes down), or use knfsd")


# -- masked views -------------------------------------------------------------------------------

def check_views(cluster: ResolvedCluster, paths: Paths) -> Iterator[Finding]:
    from oneroot.ops.nfs_serving import nfs_plan  # heavy; only when there is a live root

    s = cluster.settings
    if not any(needs_view(i.root, state_dir=s.state_dir, group_dir=s.group_dir)
               for i in cluster.images.values()):
        return
    try:
        plan = nfs_plan(cluster, paths)
    except OnerootError as exc:
        yield error("view", str(exc), exc.hint or "")
        return
    mounts = read_mounts()
    for name, spec in sorted(plan.views.items()):
        check = f"view:{name}"
        if mount_at(spec.mountpoint, mounts) is None:
            yield warning(check, f"the masked view of image {name} is not mounted (nodes "
                                 "cannot mount their root)", "`oneroot nfs apply`, or start "
                                                             "`oneroot serve`")
            continue
        showing = view_shows(spec)
        if showing:
            listed = ", ".join(f"/{m.path} ({m.reason})" for m in showing[:5])
            yield error(check, f"the view of image {name} shows {len(showing)} path(s) it "
                               f"must hide: {listed}",
                        "`oneroot nfs apply` masks them (serve does every 30 s); a "
                        "directory too big to empty live needs the view remounted")
        else:
            yield ok(check, f"the view of image {name} hides everything it must "
                            "(`oneroot image show " + name + "` lists it)")
        yield exposure_finding(name, spec, mounts)


def exposure_finding(name: str, spec: ViewSpec, mounts: list[MountEntry]) -> Finding:
    """What the masks hide only by path: world-readable files below them, which a node reads
    through the view with a forged file handle (docs/security.md, "Forged file handles")."""
    check = f"view-handles:{name}"
    exposure = exposed_by_handle(spec.lower, [m.path for m in masks_of(spec)])
    fs = filesystem_of(spec.lower, mounts)
    fstype = fs.fstype if fs is not None else "?"
    if not exposure.count:
        more = "" if exposure.complete else f" (in the first {exposure.looked_at:,} entries)"
        return ok(check, f"no world-readable file below the masks of image {name}{more}")
    how = ("any node that scans inode numbers (ext4 takes a handle with generation 0 for "
           "any generation)" if fstype == "ext4" else
           "a node that learns or guesses a file's handle")
    examples = ", ".join(f"/{p}" for p in exposure.examples)
    counted = f"{exposure.count:,}" + ("" if exposure.complete else "+")
    return warning(check, f"{counted} world-readable file(s) below the masks of image {name} "
                          f"can be read by {how}: {examples}",
                   "`chmod o-r` what is private, or keep such directories (/home, /srv) on "
                   "a filesystem of their own: the view's lower decodes any file of its "
                   "filesystem (docs/security.md, \"Forged file handles\")")


# -- knfsd ----------------------------------------------------------------------------------------

def applied_exports(exports_file: Path) -> set[tuple[str, str]]:
    """(path, client) of every line of oneroot's exports file."""
    pairs: set[tuple[str, str]] = set()
    try:
        lines = exports_file.read_text().splitlines()
    except OSError:
        return pairs
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        path, *clients = line.split()
        for c in clients:
            pairs.add((path.replace("\\040", " "), c.split("(", 1)[0]))
    return pairs


def exportfs_pairs(text: str) -> set[tuple[str, str]]:
    """(path, client) from `exportfs -v` (a long path puts its client on the next line)."""
    pairs: set[tuple[str, str]] = set()
    path = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            words = line.split()
            path = words[0]
            if len(words) > 1:
                pairs.add((path, words[1].split("(", 1)[0]))
        elif path is not None:
            pairs.add((path, line.split()[0].split("(", 1)[0]))
    return pairs


def check_export_subtrees(*, exports_file: Path = EXPORTS_FILE,
                          mounts: list[MountEntry] | None = None) -> Iterator[Finding]:
    """knfsd: a layer or image export without `subtree_check` must be a whole filesystem (a
    disk of its own): else a node forges handles with its fsid and reaches that filesystem,
    every other node's layer on the state filesystem, the server's `/` for an image in HOME.
    oneroot renders such exports `subtree_check` (`ops.knfsd_layout.check_subtrees`), but
    decides on the mounts at apply time: a disk unmounted since, or an exports file applied
    by an older oneroot, leaves a `no_subtree_check` export on the directory below."""
    table = read_mounts() if mounts is None else mounts
    for line, entry in unchecked_on_shared_filesystems(read_export_lines(exports_file), table):
        where = entry.mount_point if entry is not None else "?"
        layer = not line.comment.startswith(("image ", "EROFS"))
        reach = ("reads and writes every layer on it" if layer
                 else "reads all of that filesystem")
        yield error("knfsd-subtree", f"{line.comment} ({line.path}) is exported "
                                     "no_subtree_check but is not a filesystem of its own (it "
                                     f"is on the one at {where}): a node that forges a file "
                                     f"handle through it {reach}",
                    "`oneroot nfs apply` (it exports it subtree_check now"
                    + ("; it names the running nodes that should reboot)" if layer else ")")
                    + ", or mount its own filesystem there again first")


def check_knfsd(host: Host, *, exports_file: Path = EXPORTS_FILE,
                exportfs: str = "exportfs") -> Iterator[Finding]:
    threads = host.proc / "fs" / "nfsd" / "threads"
    try:
        running = int(threads.read_text().split()[0]) > 0
    except (OSError, ValueError, IndexError):
        yield error("knfsd", "nfsd is not loaded (no /proc/fs/nfsd)",
                    "`modprobe nfsd` and `systemctl enable --now nfs-server`")
        return
    if not running:
        yield error("knfsd", "nfsd is loaded but runs no threads",
                    "`systemctl start nfs-server`")
        return
    proc = subprocess.run([exportfs, "-v"], capture_output=True, text=True, timeout=30,
                          check=False, stdin=subprocess.DEVNULL)
    live = exportfs_pairs(proc.stdout)
    wanted = applied_exports(exports_file)
    missing, extra = sorted(wanted - live), sorted(live - wanted)
    if missing:
        yield error("knfsd", f"{len(missing)} export(s) oneroot applied are not active: "
                             + ", ".join(f"{p} {c}" for p, c in missing[:5]),
                    "`exportfs -ra` (or `oneroot nfs apply`); a view export needs its view "
                    "mounted (`mp`)")
    if extra:
        yield warning("knfsd", f"{len(extra)} active export(s) are not oneroot's: "
                               + ", ".join(f"{p} {c}" for p, c in extra[:5]),
                      "check /etc/exports and /etc/exports.d: each one is open to its clients")
    if not missing and not extra:
        yield ok("knfsd", f"nfsd runs; exportfs shows the {len(wanted)} export(s) oneroot "
                          "applied")
