"""`oneroot doctor`: checks that this server can boot its cluster, each finding with its fix.

Reads only: /proc (filesystems, listening sockets), /dev/fuse, the boot binaries, the images and
the inventory. Nothing is bound or started, so it is safe on a live server; a port held by
`oneroot serve` itself is not a conflict.

    findings = run_checks(inv, paths)       # [Finding(check=, level=, message=, fix=)]
"""

from __future__ import annotations

import enum
import ipaddress
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from oneroot.errors import BuildError, InvalidValue, OnerootError
from oneroot.fsutil.inside import resolve_inside
from oneroot.initramfs.busybox import parse_elf
from oneroot.model.cluster import DhcpMode, Image, NfsServerKind, Settings
from oneroot.model.inventory import Inventory, validate
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster, resolve_cluster
from oneroot.nfs.knfsd import default_nfs_server, kernel_has_nfsd
from oneroot.ops.bootfiles import BOOT_BINARIES
from oneroot.ops.image_secrets import HINT as SECRETS_HINT
from oneroot.ops.image_secrets import copied_secrets, read_as_it_is
from oneroot.ops.inventory import detect_init_system

_ELF_READ = 1 << 16  # bytes of init read for its program headers (PT_INTERP is near the top)
_SCRIPT_LINE = 256  # bytes of a `#!` line the kernel reads (BINPRM_BUF_SIZE)
_SCRIPT_LEVELS = 4  # `#!` programs run by `#!` programs the kernel follows


class Level(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    check: str  # kernel, nfs, ports, boot-binaries, image:NAME, inventory
    level: Level
    message: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"check": self.check, "level": str(self.level), "message": self.message,
                "fix": self.fix}


@dataclass(frozen=True, slots=True, kw_only=True)
class Host:
    """Where the checks look: the real machine by default, a fake tree in tests."""

    proc: Path = Path("/proc")
    dev: Path = Path("/dev")
    root: Path = Path("/")

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")


def ok(check: str, message: str) -> Finding:
    return Finding(check=check, level=Level.OK, message=message)


def warning(check: str, message: str, fix: str) -> Finding:
    return Finding(check=check, level=Level.WARNING, message=message, fix=fix)


def error(check: str, message: str, fix: str) -> Finding:
    return Finding(check=check, level=Level.ERROR, message=message, fix=fix)


def run_checks(inv: Inventory | None, paths: Paths, *,
               host: Host = Host()) -> list[Finding]:
    """Every check, in order; without an inventory only the server's own checks run."""
    findings = [*check_kernel(host), *check_nfs_server(inv, host),
                *check_boot_binaries(inv, host)]
    if inv is None:
        findings.append(error("inventory", f"no inventory in {paths.home}",
                              "create one: `oneroot init --server ADDR --subnet NET "
                              "--interface IFACE` (or pass --home)"))
        return findings
    findings += check_ports(inv, host)
    try:
        cluster = resolve_cluster(inv)
    except OnerootError as exc:  # a stored value that no longer passes validation
        findings.append(error("inventory", str(exc), exc.hint or
                              "fix it with `oneroot node/group set`"))
        return findings
    findings += check_images(cluster, host)
    findings += check_inventory(cluster, host)
    from oneroot.ops import doctor_server  # it builds on this module's findings

    findings += doctor_server.server_checks(cluster, paths, host)
    return findings


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.level is Level.ERROR for f in findings)


# -- kernel -------------------------------------------------------------------------------------

def kernel_filesystems(host: Host) -> set[str]:
    try:
        text = (host.proc / "filesystems").read_text()
    except OSError:
        return set()
    return {line.split()[-1] for line in text.splitlines() if line.split()}


def _module_available(host: Host, name: str) -> bool:
    """A loadable module for the running kernel (modprobe would find it)."""
    release = os.uname().release
    tree = host.path(f"/lib/modules/{release}")
    if not tree.is_dir():
        return False
    try:
        text = (tree / "modules.dep").read_text()
    except OSError:
        return False
    return any(Path(line.split(":", 1)[0]).name.split(".")[0] == name
               for line in text.splitlines())


def check_kernel(host: Host) -> list[Finding]:
    found = []
    fs = kernel_filesystems(host)
    if "overlay" in fs:
        found.append(ok("kernel", "overlayfs is available"))
    elif _module_available(host, "overlay"):
        found.append(ok("kernel", "overlayfs is available as a module (loaded on use)"))
    else:
        found.append(warning("kernel", "no overlayfs in this kernel",
                             "`modprobe overlay`; the server-side union (union=server) and "
                             "image views need it"))
    if (host.dev / "fuse").exists():
        found.append(ok("kernel", "/dev/fuse exists"))
    else:
        found.append(warning("kernel", "no /dev/fuse",
                             "`modprobe fuse` (image builds and tests use fuse-overlayfs)"))
    return found


# -- NFS server --------------------------------------------------------------------------------

GANESHA_BINARIES = ("/usr/bin/ganesha.nfsd", "/usr/sbin/ganesha.nfsd")
CEPH_FSALS = ("/usr/lib/x86_64-linux-gnu/ganesha/libfsalceph.so",
              "/usr/lib/aarch64-linux-gnu/ganesha/libfsalceph.so",
              "/usr/lib/ganesha/libfsalceph.so")


def check_nfs_server(inv: Inventory | None, host: Host) -> list[Finding]:
    filesystems = host.proc / "filesystems"
    kind = inv.settings.nfs_server if inv is not None else default_nfs_server(filesystems)
    knfsd = kernel_has_nfsd(filesystems)
    ganesha = next((p for p in GANESHA_BINARIES if host.path(p).exists()), None)
    if kind is NfsServerKind.KNFSD:
        if knfsd:
            return [ok("nfs", "the kernel NFS server (nfsd) is available")]
        return [error("nfs", "nfs_server=knfsd, but this kernel has no nfsd filesystem",
                      "`modprobe nfsd` and `apt-get install nfs-kernel-server`, or "
                      "`oneroot settings set nfs_server=ganesha`")]
    if kind is NfsServerKind.GANESHA_CEPH:
        fsal = next((p for p in CEPH_FSALS if host.path(p).exists()), None)
        if ganesha and fsal:
            return [ok("nfs", f"nfs-ganesha with FSAL_CEPH is installed ({fsal})")]
        return [error("nfs", "nfs-ganesha's FSAL_CEPH is not installed (nfs_server=ganesha-ceph)",
                      "apt-get install nfs-ganesha nfs-ganesha-ceph nfs-ganesha-rados-grace")]
    if ganesha:
        return [ok("nfs", f"nfs-ganesha is installed ({ganesha})")]
    return [error("nfs", "nfs-ganesha is not installed (nfs_server=ganesha)",
                  "apt-get install nfs-ganesha nfs-ganesha-vfs")]


# -- ports ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    proto: str  # tcp or udp
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    inode: int


_TCP_LISTEN = "0A"


def _decode_address(hex_text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_text)
    if len(raw) == 4:  # host byte order (little-endian here)
        return ipaddress.IPv4Address(raw[::-1])
    words = struct.unpack("<4I", raw)  # four host-order 32-bit words
    return ipaddress.IPv6Address(b"".join(struct.pack(">I", w) for w in words))


def parse_proc_net(text: str, proto: str) -> list[Listener]:
    """Listening TCP sockets and bound UDP sockets from /proc/net/{tcp,udp}[6]."""
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, state, inode = fields[1], fields[3], int(fields[9])
        if proto == "tcp" and state != _TCP_LISTEN:
            continue
        address, port = local.split(":")
        out.append(Listener(proto=proto, address=_decode_address(address),
                            port=int(port, 16), inode=inode))
    return out


def listeners(host: Host) -> list[Listener]:
    found = []
    for name in ("tcp", "tcp6", "udp", "udp6"):
        try:
            text = (host.proc / "net" / name).read_text()
        except OSError:
            continue
        found += parse_proc_net(text, name.rstrip("6"))
    return found


def socket_owners(host: Host, inodes: set[int]) -> dict[int, tuple[int, str]]:
    """inode → (pid, command line) for the sockets in `inodes` (the processes we may see)."""
    owners: dict[int, tuple[int, str]] = {}
    if not inodes:
        return owners
    for entry in host.proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in inodes and inode not in owners:
                    owners[inode] = (int(entry.name), _cmdline(entry))
    return owners


def _cmdline(proc_dir: Path) -> str:
    try:
        return (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


def required_ports(inv: Inventory) -> list[tuple[str, int, str]]:
    """(proto, port, service) that `oneroot serve` and the NFS server bind."""
    ports = [("udp", 67, "DHCP"), ("udp", 69, "TFTP"),
             ("tcp", inv.settings.http_port, "HTTP"), ("tcp", 2049, "NFS")]
    if inv.settings.dhcp_mode is DhcpMode.PROXY:
        ports.append(("udp", 4011, "proxyDHCP"))
    return ports


def check_ports(inv: Inventory, host: Host) -> list[Finding]:
    server = inv.settings.server_address
    relevant = {ipaddress.IPv4Address("0.0.0.0"), ipaddress.IPv6Address("::"), server,
                ipaddress.IPv6Address(f"::ffff:{server}")}
    bound = [lst for lst in listeners(host) if lst.address in relevant]
    owners = socket_owners(host, {lst.inode for lst in bound})
    found = []
    for proto, port, service in required_ports(inv):
        holders = [lst for lst in bound if lst.proto == proto and lst.port == port]
        if not holders:
            found.append(ok("ports", f"{service} {proto}/{port} on {server} is free"))
            continue
        pid, cmd = owners.get(holders[0].inode, (0, "an unknown process"))
        who = f"PID {pid} ({cmd[:80]})" if pid else cmd
        if _is_ours(cmd, service):
            found.append(ok("ports", f"{service} {proto}/{port} is served by {who}"))
        else:
            found.append(error("ports", f"{service} {proto}/{port} on {server} is taken by "
                                        f"{who}",
                               f"stop that service (`ss -lunpt 'sport = :{port}'` shows "
                               "it), or run oneroot serve with --no-"
                               f"{service.lower().removeprefix('proxy')} and let it serve"))
    return found


def _is_ours(cmdline: str, service: str) -> bool:
    return "oneroot" in cmdline or (service == "NFS" and "ganesha" in cmdline)


# -- boot binaries -------------------------------------------------------------------------------

def check_boot_binaries(inv: Inventory | None, host: Host) -> list[Finding]:
    boot_dir = host.path(str(inv.settings.boot_dir)) if inv is not None else None
    missing: dict[str, list[str]] = {}
    for name, (source, package) in BOOT_BINARIES.items():
        if host.path(source).exists() or (boot_dir is not None and (boot_dir / name).exists()):
            continue
        missing.setdefault(package, []).append(name)
    if not missing:
        return [ok("boot-binaries", f"{', '.join(BOOT_BINARIES)} present")]
    return [error("boot-binaries", f"missing {', '.join(names)}",
                  f"apt-get install {package}") for package, names in sorted(missing.items())]


# -- images --------------------------------------------------------------------------------------

def bzimage_version(path: Path) -> str | None:
    """The kernel release a bzImage names in its setup header (`6.1.0-26-amd64`)."""
    try:
        with path.open("rb") as f:
            header = f.read(0x400)
            if header[0x202:0x206] != b"HdrS":
                return None
            offset = struct.unpack_from("<H", header, 0x20E)[0]
            if not offset:
                return None
            f.seek(offset + 0x200)
            text = f.read(256)
    except OSError:
        return None
    version = text.split(b"\0", 1)[0].split(b" ", 1)[0].decode(errors="replace")
    return version or None


def init_problem(root: Path) -> str | None:
    """Why the image at `root` cannot start its `/sbin/init`, or None. Its links are followed
    inside the image, as the node's kernel follows them after switch_root (an absolute
    `/sbin -> /usr/sbin` or `/lib -> /usr/lib` names the image's, never this server's); then
    what the kernel loads to run it the same way: a script's `#!` program (at most
    `_SCRIPT_LEVELS` of them, as the kernel) and an ELF interpreter (PT_INTERP)."""
    try:
        init = resolve_inside(root, "sbin/init")
    except (InvalidValue, OSError):  # a loop; a file used as a directory
        return "/sbin/init does not resolve inside the image"
    if not init.is_file():
        return "/sbin/init is missing"
    said, program = "/sbin/init", init
    for _ in range(_SCRIPT_LEVELS + 1):
        found = _interpreter_of(program)
        if found is None:
            return None
        kind, name = found
        said = f"{said} needs the {kind} interpreter {name}"
        try:
            program = resolve_inside(root, name)
        except (InvalidValue, OSError):
            program = root / "missing"
        if not program.is_file():
            return f"{said}, which is missing"
        if not program.stat().st_mode & 0o111:
            return f"{said}, which is not executable"
        if kind == "ELF":
            return None  # the kernel never reads the loader's own PT_INTERP
        said += ", which"
    return None  # deeper: the kernel refuses it (ELOOP) and says so itself


def _interpreter_of(program: Path) -> tuple[str, str] | None:
    """What the kernel loads to run `program`: ("#!", the first word of its `#!` line, in the
    first 256 bytes as the kernel reads it) or ("ELF", its PT_INTERP); None for a static ELF
    or what neither reads (the kernel decides about those)."""
    try:
        with program.open("rb") as f:
            head = f.read(_ELF_READ)
    except OSError:
        return None
    if head.startswith(b"#!"):
        words = head[2:_SCRIPT_LINE].split(b"\n", 1)[0].split()
        return ("#!", words[0].decode(errors="replace")) if words else None
    try:
        interpreter = parse_elf(head).interpreter
    except BuildError:  # not an ELF we can read
        return None
    return ("ELF", interpreter) if interpreter is not None else None


def node_kernels(cluster: ResolvedCluster, host: Host) -> dict[str, str]:
    """image name → a kernel release its nodes boot (from the kernel file in the boot dir)."""
    out: dict[str, str] = {}
    boot_dir = host.path(str(cluster.settings.boot_dir))
    for r in cluster.nodes.values():
        image, kernel = r.image.name, r.profile.kernel
        if image in out or not kernel:
            continue
        version = bzimage_version(boot_dir / kernel)
        if version:
            out[image] = version
    return out


def check_images(cluster: ResolvedCluster, host: Host) -> Iterator[Finding]:
    """Each image's findings; those of an image no node boots are only warnings."""
    used = cluster.images_in_use()
    kernels = node_kernels(cluster, host)
    for image in sorted(cluster.images.values(), key=lambda i: i.name):
        for f in _check_image(image.at(None) if image.versions else image, host,
                              kernels=kernels, settings=cluster.settings):
            if f.level is Level.ERROR and image.name not in used:
                f = warning(f.check, f"{f.message} (no node boots this image)", f.fix)
            yield f


def _check_image(image: Image, host: Host, *, kernels: dict[str, str],
                 settings: Settings | None = None) -> Iterator[Finding]:
    check = f"image:{image.name}"
    root = host.path(str(image.root))
    if not root.is_dir():
        yield error(check, f"root {image.root} does not exist",
                    f"`oneroot image create {image.name}`, or `oneroot image use DIR "
                    f"--name {image.name}`")
        return
    secrets = copied_secrets(root) if settings and read_as_it_is(image, settings) else ()
    if secrets:
        yield warning(check, f"{image.root} holds what the masked view of a live root hides, "
                             f"and nodes read it as it is: {'; '.join(secrets)}",
                      SECRETS_HINT.replace("NAME", image.name))
    problem = init_problem(root)
    if problem is not None:
        yield error(check, f"{image.root}: {problem}: nodes cannot start",
                    "install an init system in the image (systemd-sysv or sysvinit-core + "
                    "openrc) and its C library (libc6); check the image's links (/sbin, "
                    "/lib, /lib64) with `ls -l`")
    detected = detect_init_system(root)
    if str(detected) == "unknown":
        yield error(check, "no init system detected (neither systemd nor OpenRC)",
                    "install systemd-sysv (or openrc) in the image")
    elif str(image.init_system) not in ("unknown", str(detected)):
        yield warning(check, f"recorded init system {image.init_system}, but the image "
                             f"now has {detected}",
                      f"`oneroot image use {image.root} --name {image.name}` records it "
                      "again")
    else:
        yield ok(check, f"{image.root}: init {detected}")
    modules = root / "lib" / "modules"
    if not modules.is_dir():
        modules = root / "usr" / "lib" / "modules"
    releases = sorted(p.name for p in modules.iterdir()) if modules.is_dir() else []
    wanted = kernels.get(image.name)
    if wanted and wanted not in releases:
        yield error(check, f"no /lib/modules/{wanted} for the nodes' kernel "
                           f"(the image has: {', '.join(releases) or 'none'})",
                    _modules_fix(image, f"install linux-image-{wanted} in the image, or "
                                 "rebuild it with "
                                 f"`oneroot image create {image.name} --kernel {wanted}`",
                                 f"linux-image-{wanted}"))
    elif not releases:
        yield warning(check, "no kernel modules in the image: nodes cannot load drivers "
                             "after switch_root",
                      _modules_fix(image, f"rebuild it: `oneroot image create {image.name}`",
                                   "linux-image-amd64"))
    else:
        yield ok(check, f"kernel modules for {wanted or ', '.join(releases)}")


def _modules_fix(image: Image, rebuild: str, package: str) -> str:
    """A live root (`/`) is this server's own system: never advise rebuilding it."""
    if image.root == PurePosixPath("/"):
        return (f"this image is the server's own root: install {package} on the server "
                "(`apt-get install " + package + "`); its modules then show through the view")
    return rebuild


# -- inventory -----------------------------------------------------------------------------------

def check_inventory(cluster: ResolvedCluster, host: Host) -> Iterator[Finding]:
    inv = cluster.inventory
    problems = 0
    try:
        validate(inv)
    except OnerootError as exc:
        problems += 1
        yield error("inventory", str(exc), exc.hint or "fix it with `oneroot node/group set`")
    s = inv.settings
    if s.server_address not in s.subnet:
        yield error("inventory", f"server address {s.server_address} is outside {s.subnet}",
                    "`oneroot settings set server_address=… subnet=…`")
    for r in cluster.nodes.values():
        node = r.node
        if node.address not in s.subnet:
            problems += 1
            yield error("inventory", f"{node.name}: {node.address} is outside {s.subnet}",
                        f"`oneroot node set {node.name} --ip ADDR`")
        image = r.image.name
        if image not in inv.images:
            problems += 1
            yield error("inventory", f"{node.name}: image {image!r} is not defined",
                        f"`oneroot image create {image}` or `oneroot node set {node.name} "
                        "--set image=NAME`")
        runlevel = r.profile.runlevel
        if runlevel and runlevel not in inv.runlevels:
            problems += 1
            yield error("inventory", f"{node.name}: runlevel {runlevel!r} is not defined",
                        f"`oneroot runlevel add {runlevel} SERVICE…`")
        if not node.macs:
            problems += 1
            yield warning("inventory", f"{node.name} has no MAC address: it cannot netboot",
                          f"`oneroot node set {node.name} --mac MAC`")
    for label, directory in (("boot dir", s.boot_dir), ("state dir", s.state_dir)):
        if not host.path(str(directory)).is_dir():
            problems += 1
            yield warning("inventory", f"{label} {directory} does not exist yet",
                          "`oneroot render` / `oneroot nfs apply` (or `oneroot serve`) "
                          "create it")
    if not problems:
        yield ok("inventory", f"{len(inv.nodes)} node(s), {len(inv.groups)} group(s), "
                              f"{len(inv.images)} image(s) consistent")
