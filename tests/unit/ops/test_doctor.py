"""`oneroot doctor`'s checks on a fake /proc, /dev and server tree: no socket is bound."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import struct
from pathlib import Path, PurePosixPath

import pytest

from oneroot.cli.main import main
from oneroot.model.cluster import Image, InitSystem, NfsServerKind, Settings
from oneroot.model.inventory import Inventory
from oneroot.model.paths import Paths
from oneroot.model.resolved import resolve_cluster
from oneroot.ops import doctor
from oneroot.ops.doctor import Host, Level
from oneroot.ops.inventory import detect_init_system, open_store

TCP_HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
              "   uid  timeout inode\n")


def proc_net_line(address: str, port: int, state: str, inode: int) -> str:
    raw = ipaddress.IPv4Address(address).packed[::-1].hex().upper()
    return (f"   0: {raw}:{port:04X} 00000000:0000 {state} 00000000:00000000 00:00000000 "
            f"00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n")


def fake_host(tmp_path: Path, *, filesystems: str = "nodev\toverlay\nnodev\tnfsd\n",
              fuse: bool = True) -> Host:
    proc, dev = tmp_path / "proc", tmp_path / "dev"
    (proc / "net").mkdir(parents=True)
    dev.mkdir()
    (proc / "filesystems").write_text(filesystems)
    for name in ("tcp", "tcp6", "udp", "udp6"):
        (proc / "net" / name).write_text(TCP_HEADER)
    if fuse:
        (dev / "fuse").write_text("")
    return Host(proc=proc, dev=dev, root=Path("/"))


def add_socket(host: Host, *, proto: str, address: str, port: int, inode: int,
               state: str = "0A", pid: int | None = None, cmdline: str = "") -> None:
    with (host.proc / "net" / proto).open("a") as f:
        f.write(proc_net_line(address, port, state, inode))
    if pid is not None:
        fd = host.proc / str(pid) / "fd"
        fd.mkdir(parents=True)
        os.symlink(f"socket:[{inode}]", fd / "3")
        (host.proc / str(pid) / "cmdline").write_bytes(cmdline.replace(" ", "\0").encode())


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An inventory with one node booting image `lab` (a systemd tree with kernel modules)."""
    image = tmp_path / "image"
    (image / "lib" / "systemd").mkdir(parents=True)
    (image / "lib" / "systemd" / "systemd").write_text("")
    (image / "sbin").mkdir()
    os.symlink("/lib/systemd/systemd", image / "sbin" / "init")
    (image / "lib" / "modules" / "6.1.0-26-amd64").mkdir(parents=True)
    h = tmp_path / "home"
    for argv in (["init", "--server", "10.0.0.1", "--image-root", str(tmp_path),
                  "--boot-dir", str(tmp_path / "boot"), "--state-dir", str(tmp_path / "st")],
                 ["image", "use", str(image), "--name", "lab"],
                 ["group", "set", "default", "--set", "image=lab"],
                 ["node", "add", "node01", "--mac", "52:54:00:00:00:01", "--ip",
                  "10.0.0.11"]):
        assert main(["--home", str(h), *argv]) == 0, argv
    (tmp_path / "boot").mkdir()
    (tmp_path / "st").mkdir()
    return h


def load(home: Path) -> Inventory:
    store = open_store(Paths(home=home))
    try:
        return store.load()
    finally:
        store.close()


def levels(findings: list[doctor.Finding], check: str) -> list[Level]:
    return [f.level for f in findings if f.check == check]


def test_kernel_features_present_and_missing(tmp_path: Path) -> None:
    good = doctor.check_kernel(fake_host(tmp_path / "a"))
    assert [f.level for f in good] == [Level.OK, Level.OK]
    bad = doctor.check_kernel(fake_host(tmp_path / "b", filesystems="nodev\tproc\n",
                                        fuse=False))
    assert [f.level for f in bad] == [Level.WARNING, Level.WARNING]
    assert all("modprobe" in f.fix for f in bad)


def test_nfs_server_check_without_inventory_uses_the_default(tmp_path: Path) -> None:
    """No inventory: judged by the server `oneroot init` would pick (default_nfs_server)."""
    knfsd = fake_host(tmp_path / "a")
    [found] = doctor.check_nfs_server(None, knfsd)
    assert found.level is Level.OK and "nfsd" in found.message
    plain = fake_host(tmp_path / "b", filesystems="nodev\tproc\n")
    [found] = doctor.check_nfs_server(None, Host(proc=plain.proc, dev=plain.dev,
                                                 root=tmp_path / "b"))
    assert found.level is Level.ERROR and "nfs-ganesha is not installed" in found.message


def test_nfs_server_check_follows_the_setting(tmp_path: Path, home: Path) -> None:
    inv = load(home)
    no_nfsd = fake_host(tmp_path / "h", filesystems="nodev\tproc\n")
    knfsd = inv.replace(settings=dataclasses.replace(inv.settings,
                                                     nfs_server=NfsServerKind.KNFSD))
    [found] = doctor.check_nfs_server(knfsd, no_nfsd)
    assert found.level is Level.ERROR and "nfs_server=knfsd" in found.message


def test_parse_proc_net_decodes_address_port_and_state() -> None:
    text = TCP_HEADER + proc_net_line("10.0.0.1", 8080, "0A", 77) + \
        proc_net_line("10.0.0.1", 40000, "01", 78)
    [listener] = doctor.parse_proc_net(text, "tcp")
    assert listener.address == ipaddress.IPv4Address("10.0.0.1")
    assert (listener.port, listener.inode) == (8080, 77)
    # UDP has no LISTEN state: every bound socket counts.
    assert len(doctor.parse_proc_net(text, "udp")) == 2


def test_ipv6_any_address_decodes() -> None:
    assert doctor._decode_address("0" * 32) == ipaddress.IPv6Address("::")


def test_port_taken_by_another_service_is_an_error(tmp_path: Path, home: Path) -> None:
    host = fake_host(tmp_path / "h")
    add_socket(host, proto="udp", address="0.0.0.0", port=67, inode=501, state="07",
               pid=4242, cmdline="/usr/sbin/dnsmasq --keep-in-foreground")
    add_socket(host, proto="tcp", address="10.0.0.1", port=8080, inode=502, pid=4343,
               cmdline="/usr/bin/python3 -m oneroot serve")
    add_socket(host, proto="tcp", address="192.168.1.5", port=2049, inode=503)
    found = doctor.check_ports(load(home), host)
    by_port = {f.message.split()[1]: f for f in found}
    assert by_port["udp/67"].level is Level.ERROR
    assert "PID 4242" in by_port["udp/67"].message and "dnsmasq" in by_port["udp/67"].message
    assert "ss -lunpt" in by_port["udp/67"].fix
    assert by_port["tcp/8080"].level is Level.OK  # oneroot serve itself
    assert by_port["tcp/2049"].level is Level.OK  # another address: no conflict
    assert by_port["udp/69"].level is Level.OK


def test_missing_boot_binaries_name_their_package(tmp_path: Path) -> None:
    host = Host(proc=tmp_path, dev=tmp_path, root=tmp_path)
    found = doctor.check_boot_binaries(None, host)
    fixes = {f.fix for f in found}
    assert fixes == {"apt-get install ipxe", "apt-get install pxelinux",
                     "apt-get install syslinux-common"}
    assert all(f.level is Level.ERROR for f in found)


def bzimage(version: str) -> bytes:
    data = bytearray(0x800)
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x20E, 0x300)
    text = f"{version} (debian-kernel@lists.debian.org) #1 SMP".encode()
    data[0x500:0x500 + len(text)] = text
    return bytes(data)


def test_bzimage_version(tmp_path: Path) -> None:
    (tmp_path / "vmlinuz").write_bytes(bzimage("6.1.0-26-amd64"))
    assert doctor.bzimage_version(tmp_path / "vmlinuz") == "6.1.0-26-amd64"
    (tmp_path / "junk").write_bytes(b"\0" * 2048)
    assert doctor.bzimage_version(tmp_path / "junk") is None


def test_sane_image_and_inventory(tmp_path: Path, home: Path) -> None:
    (tmp_path / "boot" / "vmlinuz").write_bytes(bzimage("6.1.0-26-amd64"))
    inv = load(home)
    cluster = resolve_cluster(inv)
    found = [*doctor.check_images(cluster, Host()), *doctor.check_inventory(cluster, Host())]
    lab = [f for f in found if f.check == "image:lab"]
    assert [f.level for f in lab] == [Level.OK, Level.OK], lab
    assert "6.1.0-26-amd64" in lab[1].message
    assert levels(found, "inventory") == [Level.OK]


def test_image_problems_are_found(tmp_path: Path, home: Path) -> None:
    (tmp_path / "boot" / "vmlinuz").write_bytes(bzimage("6.1.0-99-amd64"))
    (tmp_path / "image" / "sbin" / "init").unlink()
    (tmp_path / "image" / "lib" / "systemd" / "systemd").unlink()
    found = list(doctor.check_images(resolve_cluster(load(home)), Host()))
    lab = [f for f in found if f.check == "image:lab"]
    messages = " | ".join(f.message for f in lab)
    assert all(f.level is Level.ERROR for f in lab), lab
    assert "sbin/init is missing" in messages
    assert "no init system" in messages
    assert "/lib/modules/6.1.0-99-amd64" in messages
    # The `default` image no node boots only warns.
    assert all(f.level is not Level.ERROR for f in found if f.check == "image:default")


def test_inventory_problems_are_found(tmp_path: Path, home: Path) -> None:
    # The CLI refuses such an inventory; doctor must still explain one (an older database,
    # a hand edit).
    inv = load(home)
    node = dataclasses.replace(inv.nodes["node01"], address=ipaddress.IPv4Address("10.9.0.1"),
                               overrides={"image": "gone", "runlevel": "compute"})
    broken = inv.replace(nodes={"node01": node})
    found = [f for f in doctor.check_inventory(resolve_cluster(broken), Host())
             if f.level is not Level.OK]
    messages = " | ".join(f.message for f in found)
    assert "10.9.0.1 is outside 10.0.0.0/24" in messages
    assert "image 'gone' is not defined" in messages
    assert "runlevel 'compute' is not defined" in messages
    assert all(f.fix for f in found)


def test_run_checks_without_inventory(tmp_path: Path) -> None:
    findings = doctor.run_checks(None, Paths(home=tmp_path / "none"),
                                 host=fake_host(tmp_path))
    assert doctor.has_errors(findings)
    assert any(f.check == "inventory" and "oneroot init" in f.fix for f in findings)



def _image(tmp_path: Path, links: dict[str, str], files: dict[str, bytes]) -> Path:
    root = tmp_path / "img"
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
        (root / rel).chmod(0o755)
    for rel, target in links.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(target)
    return root


def _init_says(root: Path) -> list[str]:
    """What `oneroot doctor` says about the image's init (its errors, without the root)."""
    image = Image(name="lab", root=PurePosixPath(root), init_system=InitSystem.SYSTEMD)
    return [f.message.removeprefix(f"{root}: ").removeprefix(str(root))
            for f in doctor._check_image(image, Host(), kernels={})
            if f.level is Level.ERROR and "init" in f.message]


def test_init_is_followed_inside_the_image_not_on_this_server(tmp_path: Path) -> None:
    """An absolute link in the middle of /sbin/init's path names the image's directory: the
    host's kernel would resolve it against this server's `/` (an image without init called
    good because the server has that path, a good one called broken because it has not)."""
    host_side = tmp_path / "host-only"  # exists on this server, not in the image
    (host_side / "systemd").mkdir(parents=True)
    (host_side / "init").write_text("")
    (host_side / "systemd/systemd").write_text("")
    broken = _image(tmp_path / "a", {"sbin": str(host_side), "lib": str(host_side)}, {})
    assert _init_says(broken) == ["/sbin/init is missing: nodes cannot start",
                                  "no init system detected (neither systemd nor OpenRC)"]
    assert detect_init_system(broken) is InitSystem.UNKNOWN
    elsewhere = "/oneroot-test-not-on-this-server"
    good = _image(tmp_path / "b", {"sbin": f"{elsewhere}/sbin", "lib": "usr/lib",
                                   f"{elsewhere[1:]}/sbin/init": "/lib/systemd/systemd"},
                  {"usr/lib/systemd/systemd": b""})
    assert _init_says(good) == []
    assert detect_init_system(good) is InitSystem.SYSTEMD
    loop = _image(tmp_path / "c", {"sbin": "/sbin"}, {"lib/systemd/systemd": b""})
    assert _init_says(loop) == ["/sbin/init does not resolve inside the image: nodes cannot "
                                "start"]


def test_init_needs_its_elf_interpreter_in_the_image(tmp_path: Path) -> None:
    dynamic = Path("/bin/true").read_bytes()  # PT_INTERP /lib64/ld-linux-x86-64.so.2
    files = {"usr/sbin/init": dynamic, "lib/systemd/systemd": b""}
    links = {"sbin": "usr/sbin", "lib64": "/usr/lib64"}
    without = _image(tmp_path / "a", links, files)
    assert _init_says(without) == ["/sbin/init needs the ELF interpreter "
                                   "/lib64/ld-linux-x86-64.so.2, which is missing: nodes "
                                   "cannot start"]
    with_it = _image(tmp_path / "b", links,
                     {**files, "usr/lib64/ld-linux-x86-64.so.2": b"\x7fELF"})
    assert _init_says(with_it) == []
    static = _image(tmp_path / "c", {}, {"sbin/init": b"\x7fELF not one we can read",
                                        "lib/systemd/systemd": b""})
    assert _init_says(static) == []  # the kernel decides


def test_a_script_init_needs_its_programs_in_the_image(tmp_path: Path) -> None:
    """A script's `#!` program is what the kernel runs (and that program's own interpreter):
    doctor read only ELF init's PT_INTERP and called an image whose init's shell is missing
    good (the node then panics: "can't execute '/sbin/init'")."""
    bash = Path("/bin/true").read_bytes()  # PT_INTERP /lib64/ld-linux-x86-64.so.2
    files = {"sbin/init": b"#!  /usr/bin/bash -e\nexec /lib/systemd/systemd\n",
             "lib/systemd/systemd": b""}
    assert _init_says(_image(tmp_path / "a", {}, files)) == [
        "/sbin/init needs the #! interpreter /usr/bin/bash, which is missing: nodes cannot start"]
    no_loader = _image(tmp_path / "b", {"usr/bin/bash": "/bin/bash5"},
                       {**files, "bin/bash5": bash})
    assert _init_says(no_loader) == [
        "/sbin/init needs the #! interpreter /usr/bin/bash, which needs the ELF interpreter "
        "/lib64/ld-linux-x86-64.so.2, which is missing: nodes cannot start"]
    loader = {"lib64/ld-linux-x86-64.so.2": b"\x7fELF"}
    assert _init_says(_image(tmp_path / "c", {}, {**files, **loader, "usr/bin/bash": bash})) == []
    chain = {"sbin/init": b"#!/usr/bin/a\n", "usr/bin/a": b"#!/usr/bin/b\n",
             "usr/bin/b": b"#!/bin/sh\n", "lib/systemd/systemd": b""}
    assert _init_says(_image(tmp_path / "d", {}, chain)) == [
        "/sbin/init needs the #! interpreter /usr/bin/a, which needs the #! interpreter "
        "/usr/bin/b, which needs the #! interpreter /bin/sh, which is missing: nodes cannot start"]
    not_x = _image(tmp_path / "e", {}, {**files, **loader, "usr/bin/bash": bash})
    (not_x / "usr/bin/bash").chmod(0o644)
    assert _init_says(not_x) == ["/sbin/init needs the #! interpreter /usr/bin/bash, which is "
                                 "not executable: nodes cannot start"]


def test_an_image_copied_from_a_live_root_is_reported(tmp_path: Path) -> None:
    """Nodes read a copy of a server's disk as it is (no masked view): doctor warns of the
    server's password hashes and keys in it; the same files under a live root do not count."""
    root = _image(tmp_path, {"sbin/init": "/lib/systemd/systemd"},
                  {"lib/systemd/systemd": b"", "etc/shadow": b"root:$6$s$h:1::::::\n",
                   "root/.ssh/id_ed25519": b"private"})
    image = Image(name="rootcopy", root=PurePosixPath(root), init_system=InitSystem.SYSTEMD)
    [found] = [f for f in doctor._check_image(image, Host(), kernels={}, settings=Settings())
               if "masked view" in f.message]
    assert found.level is Level.WARNING and found.message == (
        f"{root} holds what the masked view of a live root hides, and nodes read it as it is: "
        "etc/shadow has password hashes: root; SSH user keys: root/.ssh")
    assert "`oneroot image exec rootcopy -- rm" in found.fix
    view = Settings(state_dir=PurePosixPath(root / "var/state/systems"))
    assert not [f for f in doctor._check_image(image, Host(), kernels={}, settings=view)
                if "masked view" in f.message]
