"""A virtual cluster on this machine: a lab namespace with `oneroot serve` (DHCP, TFTP, HTTP,
nfs-ganesha) on its bridge, a Debian image, our initramfs, and QEMU nodes that PXE-boot into the
image over NFS layers. The end-to-end tests and `oneroot lab` both stand on it.

Everything lives under `workdir` (inventory, state dir, boot dir), so a lab never touches the
host's `/var/state/systems`; downloads and the built image are cached in `cache_dir`.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from oneroot.errors import LabError
from oneroot.initramfs.builder import build_initramfs
from oneroot.initramfs.busybox import fetch_busybox
from oneroot.initramfs.cpio import Compression
from oneroot.initramfs.kernel import Kernel, fetch_kernel
from oneroot.lab import Lab, QemuVm, list_netns
from oneroot.lab.bmc import LabBmc
from oneroot.lab.qemu import Firmware
from oneroot.model import profile
from oneroot.model.paths import Paths
from oneroot.model.resolved import resolve_cluster
from oneroot.net import MacAddress
from oneroot.ops.images import LAB_MODULES, create_image
from oneroot.ops.inventory import get_node, open_store

Progress = Callable[[str], None]
ONEROOT = (sys.executable, "-m", "oneroot")
SUBNET = ipaddress.IPv4Network("10.0.0.0/24")
SERVER = ipaddress.IPv4Address("10.0.0.1")
# The boot NIC keeps its kernel name (eth0): udev must not rename the interface carrying root.
LAB_KERNEL_ARGS = ("net.ifnames=0",)


def node_mac(index: int) -> MacAddress:
    return MacAddress(bytes([0x52, 0x54, 0x00, 0x0E, 0x00, index]))


@dataclass(slots=True, kw_only=True)
class LabCluster:
    workdir: Path
    cache_dir: Path
    image_name: str = "lab"
    init: str = "systemd"
    memory_mib: int = 768
    progress: Progress = field(default=lambda _msg: None)
    lab: Lab | None = None
    serve_proc: subprocess.Popen[bytes] | None = None
    kernel: Kernel | None = None
    vms: dict[str, QemuVm] = field(default_factory=dict)
    bmcs: dict[str, LabBmc] = field(default_factory=dict)  # ops.labbmc.start_bmcs

    @property
    def home(self) -> Path:
        return self.workdir / "home"

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state" / "systems"

    @property
    def group_dir(self) -> Path:
        return self.workdir / "state" / "groups"

    @property
    def boot_dir(self) -> Path:
        return self.workdir / "boot"

    @property
    def serve_log(self) -> Path:
        return self.workdir / "serve.log"

    def node_dir(self, node: str) -> Path:
        return self.state_dir / node

    # -- bring-up -------------------------------------------------------------------------
    def oneroot(self, *args: str, check: bool = True, input: str | None = None
                ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*ONEROOT, "--home", str(self.home), *args], text=True,
                              capture_output=True, input=input, timeout=900)
        if check and done.returncode != 0:
            raise LabError(f"`oneroot {' '.join(args)}` failed: "
                           f"{(done.stderr or done.stdout).strip()}")
        return done

    def prepare(self) -> None:
        """Inventory, image, kernel and initramfs (no network, no VM yet)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.progress("fetching the node kernel and busybox")
        self.kernel = fetch_kernel(None, cache_dir=self.cache_dir)
        busybox = fetch_busybox(cache_dir=self.cache_dir)
        self.boot_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.kernel.vmlinuz, self.boot_dir / "vmlinuz")
        self.progress("building the initramfs")
        build_initramfs(kernel=self.kernel, busybox=busybox,
                        out=self.boot_dir / "initramfs.img", compression=Compression.GZIP,
                        level=6)
        if not (self.home / "inventory.db").exists():
            # `init` registers a `default` image; no lab node boots it. An empty root: an
            # image holding the state dir would be exported as a masked view, and a
            # server-side union nested in that view's export crashes nfs-ganesha 4.3.
            placeholder = self.workdir / "images" / "empty-default"
            placeholder.mkdir(parents=True, exist_ok=True)
            self.oneroot("init", "--server", str(SERVER), "--subnet", str(SUBNET),
                         "--interface", "br0", "--state-dir", str(self.state_dir),
                         "--boot-dir", str(self.boot_dir), "--nfs-server", "ganesha",
                         "--image-root", str(placeholder))
            # layer_fs=shared: serve runs in the lab's own mount namespace, and the host's
            # tools and tests read the layers (ops.layerfs: a layer filesystem mounted there
            # is not seen here)
            self.oneroot("settings", "set", f"group_dir={self.group_dir}", "layer_fs=shared")
            self.oneroot("group", "set", "default", "--set",
                         f"kernel_args={' '.join(LAB_KERNEL_ARGS)}", "--set",
                         f"image={self.image_name}", check=False)
        store = open_store(Paths(home=self.home))
        try:
            if self.image_name not in store.load().images:
                self.progress(f"building image {self.image_name} (mmdebstrap; cached after "
                              "the first time)")
                create_image(store, self.image_name, dest_dir=self.workdir / "images",
                             cache_dir=self.cache_dir, init=self.init,
                             kernel_modules_dir=self.kernel.modules_dir, modules=LAB_MODULES,
                             progress=self.progress)
        finally:
            store.close()
        self.oneroot("group", "set", "default", "--set", f"image={self.image_name}")

    def add_nodes(self, count: int, *, first: int = 1, extra: Sequence[str] = ()) -> list[str]:
        names = []
        for i in range(first, first + count):
            name = f"node{i:02d}"
            self.oneroot("node", "add", name, "--mac", str(node_mac(i)),
                         "--ip", str(SERVER + 10 + i), *extra)
            names.append(name)
        return names

    def start(self, serve_args: Sequence[str] = ()) -> None:
        """The lab network and `oneroot serve` (which prepares layers and runs ganesha);
        `serve_args` go to serve (a bench's baseline leaves DHCP and HTTP to others)."""
        self.lab = Lab.create(subnet=str(SUBNET), workdir=self.workdir)
        if self.lab.bridge != "br0":  # pragma: no cover - Lab's default
            self.oneroot("settings", "set", f"interface={self.lab.bridge}")
        self.progress(f"starting oneroot serve {' '.join(serve_args)}".rstrip())
        with self.serve_log.open("ab") as log:
            self.serve_proc = self.lab.popen_in_ns([*ONEROOT, "--home", str(self.home),
                                                    "serve", *serve_args], what="oneroot serve",
                                                   stdout=log, stderr=subprocess.STDOUT)
        self.wait_log("serve.started", timeout=300)
        self.wait_listening(2049, timeout=60)

    def wait_log(self, text: str, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.serve_log.read_text(errors="replace"):
            if self.serve_proc is not None and self.serve_proc.poll() is not None:
                raise LabError(f"oneroot serve exited:\n{self.serve_log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise LabError(f"timed out waiting for {text!r} in {self.serve_log}")
            time.sleep(0.1)

    def wait_listening(self, port: int, *, timeout: float) -> None:
        assert self.lab is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.lab.run_in_ns(["ss", "-ltnH", f"sport = :{port}"], check=False).stdout
            if out.strip():
                return
            time.sleep(0.2)
        raise LabError(f"nothing listens on port {port} in the lab after {timeout:.0f} s",
                       hint=f"see {self.serve_log} and {self.workdir}/home/run/ganesha")

    # -- nodes ------------------------------------------------------------------------------
    def boot(self, node: str, *, cpus: int = 1, firmware: Firmware | None = None,
             extra_args: Sequence[str] = ()) -> QemuVm:
        """Power `node` on (again); `firmware` defaults to the node's profile value;
        `extra_args` go to QEMU (a bench's local disk)."""
        assert self.lab is not None
        if firmware is None:
            firmware = self.node_firmware(node)
        index = int(node.removeprefix("node"))
        old = self.vms.pop(node, None)
        if old is not None:
            old.stop()
        vm = QemuVm(self.lab, self.lab.add_tap(), mac=node_mac(index), name=node,
                    address=self.node_address(node),
                    memory_mib=self.memory_mib, cpus=cpus, firmware=firmware,
                    workdir=self.workdir / "vms", extra_args=extra_args)
        (self.workdir / "vms").mkdir(exist_ok=True)
        vm.start()
        self.vms[node] = vm
        return vm

    def node_address(self, node: str) -> ipaddress.IPv4Address:
        store = open_store(Paths(home=self.home))
        try:
            return get_node(store.load(), node).address
        finally:
            store.close()

    def node_firmware(self, node: str) -> Firmware:
        """The `firmware` profile value of `node` (bios unless a group or the node says uefi)."""
        store = open_store(Paths(home=self.home))
        try:
            firmware = resolve_cluster(store.load()).node(node).profile.firmware
        finally:
            store.close()
        return "uefi" if firmware is profile.Firmware.UEFI else "bios"

    def stop_verified(self) -> None:
        """stop(), then make sure the lab's network namespace is gone (tests' teardown)."""
        netns = self.lab.netns if self.lab is not None else None
        self.stop()
        if netns is not None and netns in list_netns():
            raise LabError(f"the lab's namespace {netns} is still there after stop; "
                           f"remove it with `ip netns delete {netns}`")

    def stop(self) -> None:
        for vm in self.vms.values():
            vm.stop()
        self.vms.clear()
        self.bmcs.clear()  # their processes (and the VMs they started) end with the lab's
        if self.lab is not None:
            if self.serve_proc is not None:
                self.lab.stop_process(self.serve_proc, timeout=15)
                self.serve_proc = None
            self.lab.teardown()
            self.lab = None
