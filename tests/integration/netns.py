"""Network namespaces for tests: two namespaces joined by a veth pair, removed afterwards.

    with linked_namespaces("10.77.0.1/24") as link:
        subprocess.run(link.client.cmd("ip", "addr"), check=True)

Both veth ends are created directly inside their namespaces (`ip link add … netns …`), so
nothing ever appears in, or binds to, the host's own namespace. Needs root.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


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
    import os

    return os.geteuid() == 0 and shutil.which("ip") is not None


def add_namespace(prefix: str) -> Namespace:
    ns = Namespace(f"{prefix}-{secrets.token_hex(4)}")
    _ip("netns", "add", ns.name)
    ns.run("ip", "link", "set", "lo", "up")
    return ns


def delete_namespaces(namespaces: Sequence[Namespace]) -> None:
    for ns in namespaces:
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, timeout=30)


@contextmanager
def linked_namespaces(server_cidr: str | None = None, client_cidr: str | None = None, *,
                      prefix: str = "ort", server_if: str = "srv0",
                      client_if: str = "cli0") -> Iterator[Link]:
    """Two fresh namespaces, a veth pair between them (up), optional addresses; both
    namespaces (and with them the veth pair and any process sockets) are deleted on exit."""
    created: list[Namespace] = []
    try:
        server_ns = add_namespace(f"{prefix}s")
        created.append(server_ns)
        client_ns = add_namespace(f"{prefix}c")
        created.append(client_ns)
        _ip("link", "add", "name", server_if, "netns", server_ns.name, "type", "veth",
            "peer", "name", client_if, "netns", client_ns.name)
        link = Link(Side(server_ns, server_if), Side(client_ns, client_if))
        for side, cidr in ((link.server, server_cidr), (link.client, client_cidr)):
            if cidr is not None:
                side.add_address(cidr)
            side.ns.run("ip", "link", "set", "dev", side.interface, "up")
        yield link
    finally:
        delete_namespaces(created)
