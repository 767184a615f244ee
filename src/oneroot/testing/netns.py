"""Two network namespaces for a test: a server side and a client side on one link.

    with linked_namespaces("10.77.0.1/24") as link:
        subprocess.run(link.client.cmd("ip", "addr"), check=True)

Built on the product's lab (`oneroot.lab.Lab`): the server side is a lab namespace whose bridge
carries the server address, the client side a lab client wired to that bridge (`eth0`). So
there is one implementation of namespaces, their state file and their teardown (also of what
a crashed run left behind). Nothing appears in, or binds to, the host's own namespace.
Needs root.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from oneroot.lab import Lab

# Apart from `oneroot lab`'s own state, so that `lab status` never lists a test's network.
STATE_DIR = Path("/run/oneroot/test-netns")


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str

    def cmd(self, *argv: str) -> list[str]:
        """`argv` run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, timeout: float = 30, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(*argv), check=check, capture_output=True, text=True,
                              timeout=timeout)


@dataclass(frozen=True, slots=True)
class Side:
    ns: Namespace
    interface: str

    def cmd(self, *argv: str) -> list[str]:
        return self.ns.cmd(*argv)

    def set_mac(self, mac: str) -> None:
        self.ns.run("ip", "link", "set", "dev", self.interface, "down")
        self.ns.run("ip", "link", "set", "dev", self.interface, "address", mac)
        self.ns.run("ip", "link", "set", "dev", self.interface, "up")

    def add_address(self, cidr: str) -> None:
        self.ns.run("ip", "addr", "add", cidr, "dev", self.interface)


@dataclass(frozen=True, slots=True)
class Link:
    server: Side
    client: Side


def available() -> bool:
    """Whether this process may create namespaces (root and `ip` present)."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


@contextmanager
def linked_namespaces(server_cidr: str, client_cidr: str | None = None, *,
                      state_dir: Path = STATE_DIR) -> Iterator[Link]:
    """A server namespace whose bridge holds `server_cidr`, a client namespace on that bridge
    (its `eth0` up, addressed with `client_cidr` if given); both are deleted on exit, with
    every process still running in them."""
    Lab.cleanup_stale(state_dir)
    server = ipaddress.IPv4Interface(server_cidr)
    with Lab.create(subnet=server.network, server_address=server.ip, state_dir=state_dir,
                    router_advertisements=False) as lab:
        client = lab.add_client(client_cidr)
        yield Link(Side(Namespace(lab.netns), lab.bridge),
                   Side(Namespace(client.netns), client.interface))
