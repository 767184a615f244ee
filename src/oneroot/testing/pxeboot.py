"""A node's network boot with real clients, in its namespace, step by step as its firmware
and iPXE do it: DHCP with the PXE options (busybox udhcpc), the loader over TFTP (curl), DHCP
again as iPXE, its script, kernel and initramfs over HTTP (curl), then the stages its
initramfs and init report (curl POST).

    boot = pxe_boot(lab, node_ns, udhcpc, tmp_path / "boot1", prefixlen=21)
    boot.address, boot.next_server, boot.root, boot.hashes["kernel"]
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oneroot.lab import Lab
from oneroot.lab.netns import Client
from oneroot.testing.dhcpclient import Udhcpc

# What a BIOS PXE ROM sends: vendor class (60) and client architecture 0 (93); iPXE sends the
# same plus its user class (77) raw, which is how the server knows to answer with the script.
PXE_OPTIONS = ("-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000")
IPXE_OPTIONS = (*PXE_OPTIONS, "-x", "0x4d:" + b"iPXE".hex())
REPORTS = ("dhcp", "layers", "union", "switch_root", "init")
TRIES = 15  # DISCOVERs 1 s apart: a loaded server answers late, not never


@dataclass(frozen=True, slots=True, kw_only=True)
class PxeBoot:
    address: str  # the address DHCP bound (both rounds)
    server_id: str  # the DHCP server that answered the ROM
    next_server: str  # siaddr: where the ROM fetched the loader
    loader: str  # the boot file name the ROM got
    script_url: str  # the boot file iPXE got
    script: str
    root: str  # root= of the kernel command line
    status_url: str  # oneroot.status= of the kernel command line
    answers: tuple[dict[str, str], ...]  # what udhcpc's script got, each round
    hashes: dict[str, str] = field(default_factory=dict)  # loader, kernel, initramfs: SHA-256

    def text(self) -> str:
        """Everything the servers told the node, to search for an address."""
        return "\n".join([*(f"{k}={v}" for env in self.answers for k, v in env.items()),
                          self.script])


def pxe_boot(lab: Lab, node: Client, udhcpc: Udhcpc, out: Path, *, prefixlen: int,
             reports: Sequence[str] = REPORTS) -> PxeBoot:
    """Boot `node` once; fail (AssertionError) at the first step that does not work."""
    out.mkdir(parents=True, exist_ok=True)

    def run(*argv: str, timeout: float = 120) -> Any:
        return lab.run_in_ns(list(argv), netns=node.netns, check=False, timeout=timeout)

    rom = udhcpc.lease(run, node.interface, PXE_OPTIONS, tries=TRIES)
    assert rom.get("ip") and rom.get("boot_file"), f"the ROM's DHCP got no boot file: {rom}"
    run("ip", "addr", "flush", "dev", node.interface)
    run("ip", "addr", "add", f"{rom['ip']}/{prefixlen}", "dev", node.interface)
    hashes = {"loader": _fetch(run, f"tftp://{rom['siaddr']}/{rom['boot_file']}",
                               out / "loader")}
    ipxe = udhcpc.lease(run, node.interface, IPXE_OPTIONS, tries=TRIES)
    assert ipxe.get("ip") == rom["ip"], f"iPXE's DHCP: {ipxe}, the ROM's: {rom}"
    url = ipxe.get("boot_file", "")
    assert url.startswith("http://"), f"iPXE's DHCP got no script URL: {ipxe}"
    _fetch(run, url, out / "script")
    script = (out / "script").read_text()
    kernel = re.search(r"^kernel (\S+) (.*?) \|\| goto failed$", script, re.M)
    initrd = re.search(r"^initrd (\S+) \|\| goto failed$", script, re.M)
    assert kernel and initrd, f"no kernel or initrd line in the script:\n{script}"
    hashes["kernel"] = _fetch(run, kernel.group(1), out / "kernel")
    hashes["initramfs"] = _fetch(run, initrd.group(1), out / "initramfs")
    args = dict(a.split("=", 1) for a in shlex.split(kernel.group(2)) if "=" in a)
    for stage in reports:
        done = run("curl", "-sS", "--fail", "-m", "20", "-d", f"stage={stage}&status=ok",
                   args["oneroot.status"])
        assert done.returncode == 0, f"report {stage}: {done.stderr}"
    return PxeBoot(address=rom["ip"], server_id=rom.get("serverid", ""),
                   next_server=rom.get("siaddr", ""), loader=rom["boot_file"], script_url=url,
                   script=script, root=args["root"], status_url=args["oneroot.status"],
                   answers=(rom, ipxe), hashes=hashes)


def _fetch(run: Any, url: str, path: Path) -> str:
    """GET `url` (HTTP or TFTP) with curl in the node's namespace; the file's SHA-256."""
    got = run("curl", "-sS", "--fail", "-m", "60", "-o", str(path), url, timeout=90)
    assert got.returncode == 0, f"curl {url}: {got.stderr}"
    return hashlib.sha256(path.read_bytes()).hexdigest()
