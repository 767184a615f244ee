"""The lab with its server in a QEMU VM (`oneroot lab up --server vm`): the production path.

The server VM boots the cached disk of `ops.serverimage` (Debian 12, Debian's kernel, kernel
nfsd, oneroot in a venv). Its own `/` is the image, as in the seed: `oneroot init` registers `/`
as image `default` and `oneroot serve` runs there with `nfs_server=knfsd`. The nodes are sibling
QEMU VMs on the lab bridge that netboot from it. Tests and the lab drive `oneroot` inside the
VM over SSH, with the key made when the disk was built (it never leaves the cache).

    lab's netns:  br0 10.0.0.254/24 ── tap0 ── server VM eth0 10.0.0.1 (DHCP, TFTP, HTTP, nfsd)
                                    ├─ tap1 ── node01 (PXE)
                                    └─ tap2 ── node02 (PXE)
"""

from __future__ import annotations

import ipaddress
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from oneroot.errors import LabError
from oneroot.lab import Lab, QemuVm, list_netns
from oneroot.net import MacAddress
from oneroot.ops.serverimage import (
    NODE_BOOT_DIR,
    SERVER_MAC,
    SERVER_ROOT_ARG,
    ServerDisk,
    build_server_disk,
)

Progress = Callable[[str], None]
SUBNET = ipaddress.IPv4Network("10.0.0.0/24")
SERVER = ipaddress.IPv4Address("10.0.0.1")
# The bridge's own address: the host side (SSH, raw NFS clients) talks to the VM from it.
BRIDGE = ipaddress.IPv4Address("10.0.0.254")
SERVER_HOME = "/var/lib/oneroot"
SERVER_STATE_DIR = "/var/state/systems"
# no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer test can miss its
# ticks and panic ("IO-APIC + timer doesn't work!", seen at load 22 on the server VM and at
# load 13 on node01): the check is skipped, on the server and on the nodes.
SERVER_KERNEL_ARGS = (f"{SERVER_ROOT_ARG} rw console=ttyS0 net.ifnames=0 panic=-1 "
                      "no_timer_check")
NODE_KERNEL_ARGS = "net.ifnames=0 no_timer_check"
# Commands in the server VM slower than this are reported (seconds).
SLOW_COMMAND = 2.0
SSH_OPTIONS = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5")


def node_mac(index: int) -> MacAddress:
    return MacAddress(bytes([0x52, 0x54, 0x00, 0x0E, 0x00, index]))


def node_address(index: int) -> ipaddress.IPv4Address:
    return SERVER + 10 + index


@dataclass(slots=True, kw_only=True)
class VmServerLab:
    """A lab whose server is a VM; `start()`, `setup()`, `serve()`, `boot(node)`, `stop()`."""

    workdir: Path
    cache_dir: Path
    memory_mib: int = 768
    server_memory_mib: int = 1024
    progress: Progress = field(default=lambda _msg: None)
    lab: Lab | None = None
    disk: ServerDisk | None = None
    server: QemuVm | None = None
    vms: dict[str, QemuVm] = field(default_factory=dict)
    # More raw disks for the server VM (/dev/vdb, /dev/vdc, …), opened `snapshot=on`.
    extra_disks: tuple[Path, ...] = ()
    # Whether stop() tears the lab's network down (not when start() was given one).
    owns_lab: bool = True

    @property
    def vm_dir(self) -> Path:
        return self.workdir / "vms"

    def prepare(self) -> None:
        """The server disk (built once per tree, cached)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.disk = build_server_disk(self.cache_dir, progress=self.progress)

    def start(self, *, timeout: float = 300, network: Lab | None = None) -> None:
        """The lab network and the server VM, up to a working SSH login. With `network`,
        the VM joins that lab's bridge (which gets `BRIDGE` as a second address, for SSH)
        instead of a new one, and stop() leaves the network to its owner."""
        if self.disk is None:
            self.prepare()
        assert self.disk is not None
        if network is None:
            self.lab = Lab.create(subnet=SUBNET, server_address=BRIDGE, workdir=self.workdir)
        else:
            network.run_in_ns(["ip", "addr", "add", f"{BRIDGE}/{SUBNET.prefixlen}", "dev",
                               network.bridge])
            self.lab, self.owns_lab = network, False
        self.vm_dir.mkdir(parents=True, exist_ok=True)
        self.server = QemuVm(
            self.lab, self.lab.add_tap(), mac=SERVER_MAC, name="server",
            kernel=self.disk.kernel, initrd=self.disk.initrd, append=SERVER_KERNEL_ARGS,
            memory_mib=self.server_memory_mib, cpus=2, workdir=self.vm_dir,
            extra_args=tuple(arg for disk in (self.disk.disk, *self.extra_disks) for arg in (
                "-drive", f"file={disk},format=raw,if=virtio,snapshot=on")))
        self.progress("booting the server VM")
        self.server.start()
        self.wait_ssh(timeout=timeout)

    def wait_ssh(self, *, timeout: float) -> None:
        assert self.server is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.ssh("true", check=False, timeout=20).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise LabError(f"no SSH login on the server VM after {timeout:.0f} s",
                               hint=f"see {self.server.serial_log}")
            if not self.server.running():
                raise LabError("the server VM exited before SSH came up",
                               hint=f"see {self.server.serial_log}")
            time.sleep(2)

    def ssh(self, command: str, *, check: bool = True, timeout: float = 300,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a shell command as root in the server VM."""
        if self.lab is None or self.disk is None:
            raise LabError("the server VM lab is not started")
        argv = ["ssh", *SSH_OPTIONS, "-i", str(self.disk.ssh_key), f"root@{SERVER}", command]
        started = time.monotonic()
        try:
            done = self.lab.run_in_ns(argv, check=False, timeout=timeout, input=input)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"`{command}` in the server VM timed out after {timeout:g} s") from exc
        took = time.monotonic() - started
        if took >= SLOW_COMMAND:  # where a slow lab run spends its time
            self.progress(f"server VM: {took:.1f} s for `{command[:80]}`")
        if check and done.returncode != 0:
            raise LabError(f"`{command}` in the server VM failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[-2000:]}")
        return done

    def oneroot(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`oneroot ARGS` in the server VM."""
        return self.ssh(shlex.join(["oneroot", *args]), check=check)

    def setup(self, *, nodes: int = 2, ephemeral_from: int | None = None,
              extra: Sequence[str] = ()) -> list[str]:
        """`oneroot init` with knfsd and the image `/`, the node boot files, `nodes` nodes
        (those from number `ephemeral_from` on with a tmpfs top)."""
        self.oneroot("init", "--server", str(SERVER), "--subnet", str(SUBNET),
                     "--interface", "eth0", "--state-dir", SERVER_STATE_DIR,
                     "--nfs-server", "knfsd", "--image-root", "/")
        self.oneroot("group", "set", "default", "--set", f"kernel_args={NODE_KERNEL_ARGS}")
        self.ssh(f"mkdir -p {SERVER_HOME}/boot && cp {NODE_BOOT_DIR}/vmlinuz "
                 f"{NODE_BOOT_DIR}/initramfs.img {SERVER_HOME}/boot/")
        names = []
        for i in range(1, nodes + 1):
            name = f"node{i:02d}"
            ephemeral = ("--ephemeral",) if ephemeral_from and i >= ephemeral_from else ()
            self.oneroot("node", "add", name, "--mac", str(node_mac(i)),
                         "--ip", str(node_address(i)), *ephemeral, *extra)
            names.append(name)
        return names

    def serve(self, *, timeout: float = 300) -> None:
        """kernel nfsd, then `oneroot serve` as a transient unit; wait until it serves."""
        self.ssh("systemctl start nfs-server")
        self.ssh("systemd-run --unit=oneroot-serve --property=Restart=no "
                 "/usr/local/bin/oneroot serve")
        # One SSH session that waits inside the VM: an SSH login costs the VM ~3 s of CPU
        # under TCG, which polling from here took from serve's own start-up.
        waited = self.ssh(
            f"for i in $(seq {int(timeout)}); do "
            "journalctl -u oneroot-serve -o cat | grep -q serve.started && exit 0; "
            "systemctl is-failed -q oneroot-serve && exit 3; sleep 1; done; exit 4",
            check=False, timeout=timeout + 60)
        if waited.returncode == 3:
            raise LabError(f"oneroot serve failed in the server VM:\n"
                           f"{self.serve_log()[-3000:]}")
        if waited.returncode != 0:
            raise LabError(f"oneroot serve did not start in the server VM within "
                           f"{timeout:.0f} s:\n{self.serve_log()[-3000:]}")

    def serve_log(self) -> str:
        return self.ssh("journalctl -u oneroot-serve --no-pager -o cat", check=False).stdout

    def boot(self, node: str) -> QemuVm:
        """Power `node` on (again): a PXE boot from the server VM."""
        assert self.lab is not None
        index = int(node.removeprefix("node"))
        old = self.vms.pop(node, None)
        if old is not None:
            old.stop()
        vm = QemuVm(self.lab, self.lab.add_tap(), mac=node_mac(index), name=node,
                    memory_mib=self.memory_mib, workdir=self.vm_dir)
        vm.start()
        self.vms[node] = vm
        return vm

    def stop(self) -> None:
        for vm in self.vms.values():
            vm.stop()
        self.vms.clear()
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.lab is not None and not self.owns_lab:
            self.lab.run_in_ns(["ip", "addr", "del", f"{BRIDGE}/{SUBNET.prefixlen}", "dev",
                                self.lab.bridge], check=False)
            self.lab = None
        if self.lab is not None:
            netns = self.lab.netns
            self.lab.teardown()
            self.lab = None
            if netns in list_netns():
                raise LabError(f"the lab's namespace {netns} is still there after stop",
                               hint=f"ip netns delete {netns}")

    # -- files in a node's layer -----------------------------------------------------------------
    def put(self, node: str, path: str, text: str, *, mode: str = "0644") -> None:
        """Make `text` node's `path` (`oneroot overlay put` in the server VM)."""
        self.put_many(node, {path: (text, mode)})

    def put_many(self, node: str, files: dict[str, tuple[str, str]]) -> None:
        """`put` for each path: (text, mode), in one SSH session."""
        steps = []
        for i, (path, (text, mode)) in enumerate(files.items()):
            tmp = f"/tmp/oneroot-put-{node}-{i}"
            data = shlex.quote(text)
            steps.append(f"printf %s {data} > {tmp} && oneroot overlay put {shlex.quote(node)} "
                         f"{shlex.quote(path)} {tmp} --mode {mode} && rm {tmp}")
        self.ssh(" && ".join(steps))
