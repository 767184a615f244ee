"""N simulated PXE nodes powering on at once: one asyncio process, one network namespace per
node (bench/storm/netns.py), each node doing what a real one does, with its retries:

1. PXE ROM: DHCP DISCOVER/REQUEST with options 60/93/94/97 (retries at 4, 8, 16, 32 s);
2. the loader by TFTP as an Intel ROM fetches it: an RRQ with `tsize 0` only, aborted after
   the OACK (the ROM learns the size), then the RRQ with `blksize 1432 tsize 0`, lock-step
   (window 1), the last packet re-sent at 1, 2, 4, 4, 4, 4 s, then PXE-E32 (the node fails);
3. iPXE: DHCP again with user class `iPXE` (retries at 1, 2, 4, 8, 10, 10 s), which names the
   node's script URL;
4. HTTP: the script, then the kernel and initramfs it names (a connection per file, 30 s
   without a byte is a failed fetch; the rendered script's `:failed` loop waits 10 s and tries
   again, 3 rounds at most);
5. the initramfs: DHCP a third time as busybox udhcpc, then its stage reports (POST
   stage=dhcp, layers, union, switch_root, init, runlevel; busybox wget, 5 s timeout, each
   tried 3 times 1 and 2 s apart until the server answers, as 90-report and report-booted).

No delay is simulated for the kernel's own boot between 4 and 5, so the storm is harsher than
a real one. Every file's length is checked on every node; its CRC-32 on the loader and script
of every node and on the kernel and initramfs of every `--verify-every`th node (CRC-32 of 12 MB
costs 16 ms of the CPU the server needs too).

    python bench/storm/client.py --switch-ns NS --nodes 100 --manifest M.json --out R.json
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import random
import re
import resource
import socket
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

import wire
from netns import NodeNetns, plug_nodes

from oneroot.proto.dhcp import MessageType

TFTP_TIMEOUTS = (1, 2, 4, 4, 4, 4)
TFTP_BLKSIZE = 1432
HTTP_IDLE_TIMEOUT = 30.0
HTTP_RETRY_WAIT = 10.0
HTTP_ROUNDS = 3
REPORT_TIMEOUT = 5.0
REPORT_WAITS = (1.0, 2.0)  # before the 2nd and 3rd try of a report without an answer
STAGES = ("dhcp", "layers", "union", "switch_root", "init", "runlevel")
ETH_P_IP = 0x0800
NODE_DEADLINE = 600.0  # a node still booting then is a failure (and never hangs the run)


class BootFailed(Exception):
    """What a real node would print before giving up (PXE-E51, PXE-E32, iPXE's error)."""


@dataclass(slots=True)
class NodeResult:
    index: int
    mac: str
    ok: bool = False
    error: str = ""
    power_on: float = 0.0          # seconds after the run's start
    marks: dict[str, float] = field(default_factory=dict)  # stage -> seconds after power-on
    retries: dict[str, int] = field(default_factory=dict)
    report_failures: int = 0

    def retry(self, what: str) -> None:
        self.retries[what] = self.retries.get(what, 0) + 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """What every node must end up with: name -> (size, crc32), and the HTTP port."""

    files: dict[str, tuple[int, int]]
    http_port: int
    arch: int


class Node:
    def __init__(self, index: int, netns: NodeNetns, manifest: Manifest, *, verify: bool,
                 t0: float) -> None:
        self.mac = b"\x02\x00\x0a\x09" + index.to_bytes(2, "big")
        self.ns = netns
        self.manifest = manifest
        self.verify = verify
        self.t0 = t0
        self.result = NodeResult(index=index, mac=self.mac.hex(":"))
        self.guid = index.to_bytes(16, "big")
        self.address: ipaddress.IPv4Interface | None = None
        self.loop = asyncio.get_running_loop()
        self.packet_sock = netns.socket(socket.AF_PACKET, socket.SOCK_DGRAM,
                                        socket.htons(ETH_P_IP))
        wire.attach_filter(self.packet_sock.fileno(), wire.reply_filter(self.mac),
                           self.packet_sock.setsockopt)
        self.packet_sock.bind(("eth0", ETH_P_IP))

    def mark(self, stage: str) -> None:
        self.result.marks[stage] = round(time.monotonic() - self.t0 - self.result.power_on, 4)

    async def boot(self, delay: float) -> NodeResult:
        self.result.power_on = round(delay, 4)
        await asyncio.sleep(delay)
        try:
            await asyncio.wait_for(self._boot(), NODE_DEADLINE)
            self.result.ok = True
        except BootFailed as e:
            self.result.error = str(e)
        except TimeoutError:
            self.result.error = f"not booted after {NODE_DEADLINE} s"
        finally:
            self.packet_sock.close()
        return self.result

    async def _boot(self) -> None:
        arch = self.manifest.arch
        lease = await self.dhcp(wire.pxe_rom(arch, self.guid))
        self.mark("dhcp_pxe")
        self._configure(lease)
        loader = await self.tftp_fetch(lease.next_server, lease.boot_file)
        self._check(lease.boot_file, loader, always=True)
        self.mark("tftp")
        lease = await self.dhcp(wire.ipxe(arch, self.guid, self.mac))
        self.mark("dhcp_ipxe")
        self._configure(lease)
        script_url = lease.boot_file
        files, status_url = await self.fetch_boot_files(script_url)
        self.mark("files")
        lease = await self.dhcp(wire.udhcpc())
        self._configure(lease)
        self.mark("dhcp_initramfs")
        await self.report_stages(status_url)
        self.mark("reports")
        del files

    def _configure(self, lease: wire.DhcpReply) -> None:
        address = ipaddress.IPv4Interface(f"{lease.address}/{lease.netmask}")
        if address != self.address:
            self.ns.set_address("eth0", address)
            self.address = address

    def _check(self, name: str, got: tuple[int, int | None], *, always: bool) -> None:
        size, crc = got
        want_size, want_crc = self.manifest.files[name.rsplit("/", 1)[-1]]
        if size != want_size:
            raise BootFailed(f"{name}: {size} bytes, want {want_size}")
        if crc is not None and (always or self.verify) and crc != want_crc:
            raise BootFailed(f"{name}: CRC-32 {crc:08x}, want {want_crc:08x}")

    # --- DHCP ---

    async def dhcp(self, profile: wire.DhcpProfile) -> wire.DhcpReply:
        xid = random.getrandbits(32)
        offer = await self._exchange(profile, MessageType.DISCOVER, MessageType.OFFER, xid)
        while True:
            ack = await self._exchange(profile, MessageType.REQUEST, MessageType.ACK, xid,
                                       requested=offer.address, server_id=offer.server_id)
            if ack.mtype is MessageType.ACK:
                return ack
            self.result.retry(f"{profile.name}.nak")  # NAK: start over
            offer = await self._exchange(profile, MessageType.DISCOVER, MessageType.OFFER, xid)

    async def _exchange(self, profile: wire.DhcpProfile, send: MessageType,
                        want: MessageType, xid: int,
                        **fields: ipaddress.IPv4Address | None) -> wire.DhcpReply:
        payload = wire.dhcp_message(profile, send, xid=xid, mac=self.mac, **fields)
        frame = wire.udp_frame(payload)
        for attempt, timeout in enumerate(profile.timeouts):
            if attempt:
                self.result.retry(f"{profile.name}.{send.name.lower()}")
            self.packet_sock.sendto(frame, ("eth0", ETH_P_IP, 0, 0, b"\xff" * 6))
            deadline = self.loop.time() + timeout
            while (left := deadline - self.loop.time()) > 0:
                try:
                    data = await asyncio.wait_for(self.loop.sock_recv(self.packet_sock, 2048),
                                                  left)
                except TimeoutError:
                    break
                reply = wire.read_dhcp_reply(data)
                if reply is None or reply.xid != xid:
                    continue
                if reply.mtype is want or (want is MessageType.ACK
                                           and reply.mtype is MessageType.NAK):
                    return reply
        raise BootFailed(f"{profile.name}: no DHCP {want.name} after "
                         f"{len(profile.timeouts)} tries")

    # --- TFTP ---

    async def tftp_fetch(self, server: ipaddress.IPv4Address, name: str) -> tuple[int, int]:
        probe = await self._tftp(server, name, {"tsize": "0"}, probe=True)
        del probe
        return await self._tftp(server, name, {"blksize": str(TFTP_BLKSIZE), "tsize": "0"})

    async def _tftp(self, server: ipaddress.IPv4Address, name: str, options: dict[str, str],
                    *, probe: bool = False) -> tuple[int, int]:
        assert self.address is not None
        sock = self.ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((str(self.address.ip), 0))
        done: asyncio.Future[tuple[int, int]] = self.loop.create_future()
        transfer = TftpTransfer(self, done, (str(server), 69), wire.tftp_rrq(name, options),
                                probe=probe)
        transport, _ = await self.loop.create_datagram_endpoint(lambda: transfer, sock=sock)
        try:
            return await done
        finally:
            transfer.cancel_timer()
            transport.close()

    # --- HTTP ---

    async def fetch_boot_files(self, script_url: str) -> tuple[list[str], str]:
        """The script, then what it names; the script's `:failed` loop on an error."""
        last = ""
        for round_ in range(HTTP_ROUNDS):
            if round_:
                self.result.retry("http.round")
                await asyncio.sleep(HTTP_RETRY_WAIT)
            try:
                script = await self.http_get(script_url, keep=True)
                text = script.decode()
                kernel = re.search(r"^kernel (\S+)", text, re.M)
                initrd = re.search(r"^initrd (\S+)", text, re.M)
                status = re.search(r"oneroot\.status=(\S+)", text)
                if not (kernel and initrd and status):
                    raise BootFailed(f"{script_url}: not a oneroot script")
                for url in (kernel.group(1), initrd.group(1)):
                    await self.http_get(url)
                return [script_url, kernel.group(1), initrd.group(1)], status.group(1)
            except (OSError, TimeoutError, HttpError) as e:
                last = f"{type(e).__name__}: {e}"
        raise BootFailed(f"http: {last} ({HTTP_ROUNDS} rounds)")

    async def http_get(self, url: str, *, keep: bool = False) -> bytes:
        host, path = _split_url(url)
        request = wire.http_request("GET", host, path, agent="iPXE/1.21.1+ (g4e456)")
        body, size, crc = await self._http(host, request, keep=keep)
        name = path.rsplit("/", 1)[-1]
        if name in self.manifest.files:
            self._check(name, (size, crc), always=False)
        else:
            self.manifest_check_script(name, body, size)
        return body

    def manifest_check_script(self, name: str, body: bytes, size: int) -> None:
        """Scripts are rendered per node, so they are not in the manifest: check who."""
        if not body.startswith(b"#!ipxe") or len(body) != size:
            raise BootFailed(f"{name}: not an iPXE script")

    async def report_stages(self, url: str) -> None:
        host, path = _split_url(url)
        for stage in STAGES:
            body = f"stage={stage}&status=ok&message=".encode()
            request = wire.http_request("POST", host, path, agent="Wget", body=body,
                                        content_type="application/x-www-form-urlencoded")
            if not await self._report(host, request):
                self.result.report_failures += 1  # best effort, as in the initramfs

    async def _report(self, host: str, request: bytes) -> bool:
        """One report as the initramfs (90-report) and report-booted send it: tries with
        waits of REPORT_WAITS between them until the server answers; a 4xx is final."""
        for wait in (0.0, *REPORT_WAITS):
            if wait:
                self.result.retry("report")
                await asyncio.sleep(wait)
            try:
                await asyncio.wait_for(self._http(host, request, keep=False, expect_ok=True),
                                       REPORT_TIMEOUT)
                return True
            except HttpError as e:
                if 400 <= e.status < 500:
                    return False
            except (OSError, TimeoutError):
                pass
        return False

    async def _http(self, host: str, request: bytes, *, keep: bool,
                    expect_ok: bool = True) -> tuple[bytes, int, int | None]:
        """(body if `keep`, body length, CRC-32 if `verify` or `keep`)."""
        address, _, port = host.partition(":")
        sock = self.ns.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            await asyncio.wait_for(self.loop.sock_connect(sock, (address, int(port or 80))),
                                   HTTP_IDLE_TIMEOUT)
            await self.loop.sock_sendall(sock, request)
            return await read_response(self.loop, sock, keep=keep,
                                       crc=keep or self.verify)
        finally:
            sock.close()


class HttpError(Exception):
    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


CHUNK = 256 * 1024


async def read_response(loop: asyncio.AbstractEventLoop, sock: socket.socket, *, keep: bool,
                        crc: bool) -> tuple[bytes, int, int | None]:
    # a buffer per response: a reader callback fills it before this coroutine resumes
    view = memoryview(bytearray(CHUNK))
    head = b""
    while b"\r\n\r\n" not in head:
        n = await asyncio.wait_for(loop.sock_recv_into(sock, view), HTTP_IDLE_TIMEOUT)
        if n == 0:
            raise HttpError("connection closed before the response head")
        head += bytes(view[:n])
    raw_head, _, rest = head.partition(b"\r\n\r\n")
    status, length = wire.http_head(raw_head)
    if status != 200:
        raise HttpError(f"HTTP {status}", status)
    if length is None:
        raise HttpError("no Content-Length")
    kept = [rest] if keep else []
    got = len(rest)
    checksum = zlib.crc32(rest) if crc else None
    while got < length:
        n = await asyncio.wait_for(loop.sock_recv_into(sock, view), HTTP_IDLE_TIMEOUT)
        if n == 0:
            raise HttpError(f"connection closed after {got} of {length} bytes")
        got += n
        if checksum is not None:
            checksum = zlib.crc32(view[:n], checksum)
        if keep:
            kept.append(bytes(view[:n]))
    return b"".join(kept), got, checksum


def _split_url(url: str) -> tuple[str, str]:
    match = re.fullmatch(r"http://([^/]+)(/.*)", url)
    if match is None:
        raise BootFailed(f"not an http:// URL: {url!r}")
    return match.group(1), match.group(2)


class TftpTransfer(asyncio.DatagramProtocol):
    """One RRQ, lock-step, with the ROM's retransmission of its last packet."""

    def __init__(self, node: Node, done: asyncio.Future[tuple[int, int]],
                 server: tuple[str, int], rrq: bytes, *, probe: bool) -> None:
        self.node, self.done, self.server, self.probe = node, done, server, probe
        self.last = rrq
        self.peer: tuple[str, int] | None = None
        self.blksize = 512
        self.expected = 1
        self.size = 0
        self.crc = 0
        self.tries = 0
        self.timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._send(self.last)

    def _send(self, packet: bytes) -> None:
        assert self.transport is not None
        self.last = packet
        self.transport.sendto(packet, self.peer or self.server)
        self.cancel_timer()
        self.timer = self.node.loop.call_later(TFTP_TIMEOUTS[self.tries], self._timeout)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timeout(self) -> None:
        self.tries += 1
        if self.tries >= len(TFTP_TIMEOUTS):
            self._finish(BootFailed(f"tftp: timeout after {self.size} bytes (PXE-E32)"))
            return
        self.node.result.retry("tftp.timeout")
        self._send(self.last)

    def _finish(self, outcome: tuple[int, int] | BaseException) -> None:
        self.cancel_timer()
        if self.done.done():
            return
        if isinstance(outcome, BaseException):
            self.done.set_exception(outcome)
        else:
            self.done.set_result(outcome)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.peer is None:
            self.peer = addr
        elif addr != self.peer:
            return  # another TID: RFC 1350 says answer it with an error; a ROM ignores it
        opcode = int.from_bytes(data[:2], "big")
        if opcode == wire.OACK:
            options = wire.tftp_oack_options(data)
            if self.probe:
                self._send(wire.tftp_error(0, "TFTP Aborted"))
                self._finish((int(options.get("tsize", "0")), 0))
                return
            self.blksize = int(options.get("blksize", "512"))
            self.tries = 0
            self._send(wire.tftp_ack(0))
        elif opcode == wire.DATA:
            block = int.from_bytes(data[2:4], "big")
            if block == self.expected & 0xFFFF:
                payload = data[4:]
                self.size += len(payload)
                self.crc = zlib.crc32(payload, self.crc)
                self.expected += 1
                self.tries = 0
                self._send(wire.tftp_ack(block))
                if len(payload) < self.blksize:
                    self._finish((self.size, self.crc))
            elif block == (self.expected - 1) & 0xFFFF:
                self._send(wire.tftp_ack(block))  # our ACK was lost: say it again
        elif opcode == wire.ERROR:
            message = data[4:].split(b"\0", 1)[0].decode(errors="replace")
            self._finish(BootFailed(f"tftp: error {int.from_bytes(data[2:4], 'big')} "
                                    f"{message!r}"))


async def run(args: argparse.Namespace) -> dict[str, object]:
    raw = json.loads(Path(args.manifest).read_text())
    manifest = Manifest(files={k: (v[0], v[1]) for k, v in raw["files"].items()},
                        http_port=raw["http_port"], arch=raw["arch"])
    setup = time.monotonic()
    namespaces = [NodeNetns() for _ in range(args.nodes)]
    plug_nodes(args.switch_ns, [(ns, (b"\x02\x00\x0a\x09" + (i + 1).to_bytes(2, "big")).hex(":"))
                                for i, ns in enumerate(namespaces)])
    await asyncio.sleep(args.settle)  # the bridge ports come up (no STP: at once)
    setup = time.monotonic() - setup
    rng = random.Random(args.seed)
    t0 = time.monotonic()
    cpu0 = time.process_time()
    nodes = [Node(i + 1, ns, manifest, verify=(i % args.verify_every == 0), t0=t0)
             for i, ns in enumerate(namespaces)]
    results = await asyncio.gather(*(node.boot(rng.uniform(0, args.spread)) for node in nodes))
    wall = time.monotonic() - t0
    return {"nodes": args.nodes, "wall_s": round(wall, 3), "setup_s": round(setup, 2),
            "loadgen_cpu_s": round(time.process_time() - cpu0, 2),
            "results": [asdict(r) for r in results]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--switch-ns", required=True)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--spread", type=float, default=1.0,
                        help="power-on times are spread uniformly over this many seconds")
    parser.add_argument("--verify-every", type=int, default=10)
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    if not 1 <= args.nodes <= 1000:
        parser.error("--nodes must be 1..1000 (a bridge takes 1,023 ports)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    report = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(report))


if __name__ == "__main__":
    main()
