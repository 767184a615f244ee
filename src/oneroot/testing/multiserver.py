"""Several `oneroot serve` on one PostgreSQL, each in a namespace of its own on one bridge.

    with serve_cluster(tmp_path, pg.new_schema_url(), servers=2) as cluster:
        cluster.oneroot("a", "node", "add", ...)         # the CLI on server a's home
        result = cluster.storm(1000)                      # DHCP clients from their namespace

Server `a` is initialized on the database (`init --db`), the others join it (`db join`); each
has its home, its boot directory and its address (`serve --server-id --server-address
--boot-dir`). The lab's bridge namespace holds the subnet's first address; the servers the
next ones; the clients have a namespace of their own. Everything is removed on exit.
"""

from __future__ import annotations

import json
import string
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from oneroot.lab import Lab
from oneroot.lab.netns import Client
from oneroot.testing.netns import STATE_DIR

ONEROOT = [sys.executable, "-m", "oneroot"]
SUBNET = IPv4Network("10.89.0.0/21")
POOL = (IPv4Address("10.89.2.0"), IPv4Address("10.89.6.255"))  # 1,280 addresses
HTTP_PORT = 8080


@dataclass(slots=True)
class Server:
    name: str
    address: IPv4Address
    home: Path
    boot_dir: Path
    ns: Client
    log: Path
    peers: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{HTTP_PORT}"


@dataclass(slots=True)
class ServeCluster:
    lab: Lab
    tmp: Path
    url: str | None
    servers: dict[str, Server]
    clients: Client
    extra_args: tuple[str, ...] = ()
    storms: int = field(default=0)

    def oneroot(self, server: str, *argv: str, check: bool = True
                ) -> subprocess.CompletedProcess[str]:
        home = self.servers[server].home
        result = subprocess.run([*ONEROOT, "--home", str(home), *argv], capture_output=True,
                                text=True, timeout=60, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"oneroot {' '.join(argv)}: {result.stderr}")
        return result

    def start(self, name: str, timeout: float = 60) -> None:
        server = self.servers[name]
        argv = [*ONEROOT, "--home", str(server.home), "serve", "--no-nfs",
                "--server-id", name, "--server-address", str(server.address),
                "--interface", server.ns.interface, "--boot-dir", str(server.boot_dir),
                *(arg for peer in server.peers for arg in ("--peer", peer)),
                *self.extra_args]
        with server.log.open("ab") as out:
            server.proc = self.lab.popen_in_ns(argv, netns=server.ns.netns, what=f"serve-{name}",
                                               stdout=out, stderr=subprocess.STDOUT)
        self.wait_log(name, "serve.started", timeout=timeout)

    def stop(self, name: str) -> None:
        server = self.servers[name]
        if server.proc is not None and server.proc.poll() is None:
            self.lab.stop_process(server.proc, timeout=10)
        server.proc = None

    def wait_log(self, name: str, text: str, *, timeout: float = 60, after: int = 0) -> None:
        server = self.servers[name]
        deadline = time.monotonic() + timeout
        while text not in server.log.read_text()[after:]:
            if (server.proc is not None and server.proc.poll() is not None) or \
                    time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged by {name}:\n"
                                     f"{server.log.read_text()[-4000:]}")
            time.sleep(0.05)

    def storm(self, clients: int, *, prefix: int = 0x50, timeout: float = 45) -> dict[str, Any]:
        """`clients` DHCP clients at once from the clients' namespace (`testing.dhcpstorm`)."""
        self.storms += 1
        out = self.tmp / f"storm{self.storms}.json"
        run = self.lab.run_in_ns([*ONEROOT[:1], "-m", "oneroot.testing.dhcpstorm",
                                  "--interface", self.clients.interface, "--clients",
                                  str(clients), "--prefix", hex(prefix), "--timeout",
                                  str(timeout), "--out", str(out)],
                                 netns=self.clients.netns, check=False, timeout=timeout + 30)
        if not out.exists():
            raise AssertionError(f"the storm failed: {run.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result

    def http_get(self, server: str, path: str, *, timeout: float = 60) -> bytes:
        """GET `path` from `server`'s HTTP, from the bridge's namespace (it has an address)."""
        url = self.servers[server].url + path
        result = subprocess.run(
            ["ip", "netns", "exec", self.lab.netns, sys.executable, "-c",
                             "import sys,urllib.request;sys.stdout.buffer.write("
             f"urllib.request.urlopen({url!r}, timeout={timeout}).read())"],
            capture_output=True, timeout=timeout + 10, check=False)
        if result.returncode != 0:
            raise AssertionError(f"GET {url}: {result.stderr.decode()[-2000:]}")
        return result.stdout


@contextmanager
def serve_cluster(tmp: Path, url: str | None, *, servers: int = 2, start: bool = True,
                  settings: Sequence[str] = (), extra_args: Sequence[str] = ()
                  ) -> Iterator[ServeCluster]:
    """`servers` homes on the database at `url`, each server started (unless not `start`).
    Without a URL: one server on its home's SQLite files (for comparisons)."""
    if url is None and servers != 1:
        raise ValueError("several servers need one PostgreSQL database")
    bridge = next(SUBNET.hosts())
    with Lab.create(subnet=SUBNET, server_address=bridge, state_dir=STATE_DIR,
                    router_advertisements=False) as lab:
        members: dict[str, Server] = {}
        for index, name in enumerate(string.ascii_lowercase[:servers]):
            address = bridge + 1 + index
            ns = lab.add_client(f"{address}/{SUBNET.prefixlen}")
            members[name] = Server(name=name, address=address, home=tmp / f"home-{name}",
                                   boot_dir=tmp / f"boot-{name}", ns=ns,
                                   log=tmp / f"serve-{name}.log")
        for server in members.values():
            server.peers = tuple(p.url for p in members.values() if p is not server)
        cluster = ServeCluster(lab=lab, tmp=tmp, url=url, servers=members,
                               clients=lab.add_client(None), extra_args=tuple(extra_args))
        first = members["a"]
        first.boot_dir.mkdir(parents=True)
        cluster.oneroot("a", "init", *(("--db", url) if url else ()), "--server",
                        str(first.address), "--subnet",
                        str(SUBNET), "--interface", "eth0", "--image-root", str(tmp),
                        "--boot-dir", str(first.boot_dir), "--http-port", str(HTTP_PORT))
        cluster.oneroot("a", "settings", "set", "discovery=true", f"pool_start={POOL[0]}",
                        f"pool_end={POOL[1]}", *settings)
        for server in list(members.values())[1:]:
            server.boot_dir.mkdir(parents=True)
            cluster.oneroot(server.name, "db", "join", str(url))
        try:
            if start:
                for name in members:
                    cluster.start(name)
            yield cluster
        finally:
            for name in members:
                cluster.stop(name)
