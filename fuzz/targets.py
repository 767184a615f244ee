"""Fuzz targets: one function per target, `target(data: bytes) -> None`.

A target raises (an AssertionError or anything unexpected) only when it found a bug. Each checks
the properties its code promises, not merely "no exception":

    dhcp_codec      parse_packet: only MalformedPacket escapes; a decoded packet re-encodes to a
                    packet that decodes to itself
    tftp_codec      the same for TFTP, and re-encoding gives back the exact bytes
    dhcp_responder  a run of requests (DISCOVER/REQUEST/DECLINE/RELEASE/INFORM, relayed or not,
                    proxy or full, from the client's own frame or a forged one) against one lease
                    table: replies encode and decode, every address handed out is in the subnet
                    and never a node's to a stranger, a DECLINE is honoured only for the
                    client's own pool lease and only from its own frame (or its relay)
    tftp_transfer   a read transfer fed datagrams and timer events interleaved: every datagram it
                    sends is a valid TFTP packet, blocks never exceed blksize, the blocks sent
                    spell the file, it always ends, and it never acts after it ended
    http_resolver   resolve_in_root never returns a path outside the root or a non-file
    rootspec        the Python root= parser never fails with anything but RootSpecError, its
                    canonical form parses to itself; with `differential`, busybox sh's twin
                    (parse-root.sh) gives the same answer for the same input

`ONEROOT_FUZZ_PLANT=1` (tests only) adds a planted bug to each target: a deep state the target
must reach for the fuzzer to be of any use. The tests prove that each is found in its budget.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from oneroot.errors import MalformedPacket, RootSpecError
from oneroot.net import MacAddress
from oneroot.proto import dhcp, tftp
from oneroot.rootspec import corpus, parser, spec

PLANTED = os.environ.get("ONEROOT_FUZZ_PLANT") == "1"


class PlantedBug(Exception):
    """The planted bug was reached (only with ONEROOT_FUZZ_PLANT=1)."""


def _plant(reached: bool, target: str) -> None:
    if PLANTED and reached:
        raise PlantedBug(f"planted bug reached in {target}")


class _Bytes:
    """A cursor over the fuzzer's bytes: structured values from an unstructured input."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def int(self, nbytes: int = 1) -> int:
        chunk = self.data[self.pos : self.pos + nbytes]
        self.pos += nbytes
        return int.from_bytes(chunk.ljust(nbytes, b"\0"), "big")

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def rest(self) -> bytes:
        return self.take(len(self.data))

    @property
    def left(self) -> int:
        return max(0, len(self.data) - self.pos)


# -- codecs ----------------------------------------------------------------------------------


def dhcp_codec(data: bytes) -> None:
    try:
        packet = dhcp.parse_packet(data)
    except MalformedPacket:
        return
    again = dhcp.parse_packet(packet.to_bytes())
    assert again == packet, (packet, again)
    relay = packet.options.get(dhcp.OptionCode.RELAY_AGENT_INFO)
    if relay is not None:
        try:
            subs = dhcp.decode_suboptions(dhcp.OptionCode.RELAY_AGENT_INFO, relay)
        except MalformedPacket:
            return
        _plant(len(subs) >= 4, "dhcp_codec")


def tftp_codec(data: bytes) -> None:
    try:
        packet = tftp.parse_packet(data)
    except MalformedPacket:
        return
    encoded = packet.to_bytes()
    assert encoded == data, (data, packet)
    assert tftp.parse_packet(encoded) == packet
    if isinstance(packet, tftp.ReadRequest):
        for name, value in packet.options:
            _plant(name == "rollover" and value == "1", "tftp_codec")


# -- the DHCP responder ----------------------------------------------------------------------

SERVER = IPv4Address("10.0.0.1")
SUBNET = IPv4Network("10.0.0.0/24")
NODES = {
    MacAddress.parse("52:54:00:00:00:01"): dhcp.NodeBoot(
        name="node01", address=IPv4Address("10.0.0.11"), bios_file="undionly.kpxe",
        uefi_file="ipxe.efi", ipxe_url="http://10.0.0.1:8080/boot/node01.ipxe"),
    MacAddress.parse("52:54:00:00:00:02"): dhcp.NodeBoot(
        name="node02", address=IPv4Address("10.0.0.12"), bios_file="pxelinux.0",
        uefi_file="snponly.efi", ipxe_url="http://10.0.0.1:8080/boot/node02.ipxe",
        bios_pxelinux=True),
}
NODE_ADDRESSES = {node.address for node in NODES.values()}
POOL = (IPv4Address("10.0.0.100"), IPv4Address("10.0.0.103"))
CONFIGS = [
    dhcp.NetworkConfig(server_address=SERVER, subnet=SUBNET, router=IPv4Address("10.0.0.254"),
                       dns=(IPv4Address("10.0.0.2"),), domain="cluster.test", lease_time=3600,
                       pool=POOL),
    dhcp.NetworkConfig(server_address=SERVER, subnet=SUBNET, lease_time=60),
    dhcp.NetworkConfig(server_address=SERVER, subnet=SUBNET, mode=dhcp.DhcpMode.PROXY),
]


@dataclass
class _Leases:
    by_mac: dict[MacAddress, dhcp.Lease] = field(default_factory=dict)
    declined: dict[IPv4Address, float] = field(default_factory=dict)

    def lease_for_mac(self, mac: MacAddress) -> dhcp.Lease | None:
        return self.by_mac.get(mac)

    def lease_for_address(self, address: IPv4Address) -> dhcp.Lease | None:
        return next((lease for lease in self.by_mac.values() if lease.address == address), None)

    def is_declined(self, address: IPv4Address, now: float) -> bool:
        return self.declined.get(address, 0.0) > now

    def apply(self, change: dhcp.LeaseChange) -> None:
        if change.action is dhcp.LeaseAction.BIND:
            self.by_mac[change.mac] = dhcp.Lease(mac=change.mac, address=change.address,
                                                 node=change.node, expires=change.expires,
                                                 state=change.state)
        elif change.action is dhcp.LeaseAction.RELEASE:
            self.by_mac.pop(change.mac, None)
        else:
            self.declined[change.address] = change.expires


def _check_decision(request: dhcp.DhcpPacket, decision: dhcp.Decision) -> None:
    if decision.reply is None:
        return
    assert decision.destination is not None, "a reply with nowhere to go"
    reply = decision.reply
    assert dhcp.parse_packet(reply.to_bytes()) == reply
    assert reply.xid == request.xid
    offered = reply.yiaddr
    if offered != IPv4Address(0):
        assert offered in SUBNET, offered
        node = NODES.get(request.mac)
        if node is None:
            assert offered not in NODE_ADDRESSES, f"{offered} is a node's, offered to a stranger"
        elif reply.message_type in (dhcp.MessageType.OFFER, dhcp.MessageType.ACK):
            assert offered == node.address, (offered, node)


_OTHER_MAC = MacAddress.parse("52:54:00:66:66:66")


def _check_decline(request: dhcp.DhcpPacket, decision: dhcp.Decision, leases: _Leases,
                   frame_source: MacAddress | None) -> None:
    change = decision.lease_change
    if change is None or change.action is not dhcp.LeaseAction.DECLINE:
        return
    holder = leases.lease_for_address(change.address)
    assert holder is not None and holder.mac == request.mac, "declined another's address"
    assert change.address not in NODE_ADDRESSES, "a node's address was quarantined"
    if request.giaddr == IPv4Address(0):
        assert frame_source == request.mac, f"DECLINE honoured from frame {frame_source}"


def dhcp_responder(data: bytes) -> None:
    src = _Bytes(data)
    config = CONFIGS[src.int() % len(CONFIGS)]
    leases = _Leases()
    now = 1_000_000.0
    while src.left > 4:
        size = src.int(2) % 700
        port = (dhcp.SERVER_PORT, dhcp.PXE_PORT)[src.int() & 1]
        now += src.int()
        try:
            request = dhcp.parse_packet(src.take(size))
            own = request.mac
        except MalformedPacket:
            continue

        def answer(frame_source: MacAddress | None, request: dhcp.DhcpPacket = request,
                   now: float = now, port: int = port) -> dhcp.Decision:
            return dhcp.respond(request, now=now, config=config, lookup=NODES.get,
                                leases=leases, port=port, source=(IPv4Address("10.0.0.77"), 68),
                                is_reserved=NODE_ADDRESSES.__contains__,
                                frame_source=frame_source)

        try:
            # The same request from a forged frame (another host's MAC, or a socket that cannot
            # tell) first: a DECLINE must not be honoured. Then from the client's own frame.
            for forged in (_OTHER_MAC, None):
                _check_decline(request, answer(forged), leases, forged)
            decision = answer(own)
        except MalformedPacket:
            continue
        _check_decision(request, decision)
        _check_decline(request, decision, leases, own)
        if decision.lease_change is not None:
            leases.apply(decision.lease_change)
        if decision.reply is not None:
            _plant(decision.reply.message_type is dhcp.MessageType.NAK
                   and request.giaddr != IPv4Address(0), "dhcp_responder")


# -- the TFTP read transfer ------------------------------------------------------------------

_OPTION_NAMES = ("blksize", "tsize", "windowsize", "timeout", "x")
_MAX_EVENTS = 400


def _read_request(src: _Bytes) -> tuple[tftp.ReadRequest, bytes]:
    content = bytes(range(256)) * (src.int(2) % 40) + src.take(src.int() % 64)
    mode = ("octet", "netascii", "mail", "OCTET")[src.int() % 4]
    options: list[tuple[str, str]] = []
    for _ in range(src.int() % 4):
        name = _OPTION_NAMES[src.int() % len(_OPTION_NAMES)]
        options.append((name, str(src.int(2) % 70000)))
    return tftp.ReadRequest(filename="f", mode=mode, options=tuple(options)), content


def _drive(transfer: tftp.ReadTransfer, src: _Bytes, now: float) -> tuple[dict[int, bytes], int]:
    """Feed events until the transfer ends; return the DATA payloads sent by block number."""
    blocks: dict[int, bytes] = {}
    acks = 0
    for _ in range(_MAX_EVENTS):
        while (action := transfer.next_action()) is not None:
            assert not isinstance(action, tftp.Finished | tftp.Failed) or transfer.finished
            if isinstance(action, tftp.SendDatagram):
                packet = tftp.parse_packet(action.data)
                if isinstance(packet, tftp.Data):
                    blocks.setdefault(packet.block, packet.data)
        if transfer.finished:
            assert transfer.next_action() is None, "acted after it ended"
            return blocks, acks
        kind = src.int() % 4 if src.left else 3
        if kind == 0:
            transfer.datagram_received(tftp.Ack(block=src.int(2)).to_bytes(), now=now)
            acks += 1
        elif kind == 1:
            transfer.datagram_received(src.take(src.int() % 16), now=now)
        else:
            now += (1.0, 60.0)[kind & 1] if src.left else 60.0
            transfer.timer_expired(now=now)
    raise AssertionError(f"no end after {_MAX_EVENTS} events")


def tftp_transfer(data: bytes) -> None:
    src = _Bytes(data)
    request, content = _read_request(src)
    config = tftp.TransferConfig(max_blksize=1468, max_windowsize=(1, 4, 64)[src.int() % 3])
    transfer = tftp.ReadTransfer(tftp.BytesSource(content), request, config, now=0.0)
    blocks, acks = _drive(transfer, src, 0.0)
    stats = transfer.stats
    for number, payload in blocks.items():
        assert len(payload) <= stats.blksize, (number, len(payload), stats.blksize)
    if request.mode.lower() == "octet" and blocks:
        # Blocks 1..k (block numbers wrap at 65536: not reached with these sizes) spell a prefix.
        sent = b"".join(blocks[n] for n in sorted(blocks))
        assert content.startswith(sent), "the blocks sent do not spell the file"
    _plant(stats.windowsize > 1 and stats.retransmits >= 2 and acks >= 3
           and transfer.finished and stats.bytes == len(content) > 0, "tftp_transfer")


# -- the HTTP path resolver ------------------------------------------------------------------

_TREE: Path | None = None


def _tree() -> Path:
    """A boot root with files, a subdirectory, and links inside and out (made once)."""
    global _TREE
    if _TREE is None:
        base = Path(tempfile.mkdtemp(prefix="oneroot-fuzz-http-"))
        root = base / "boot"
        (root / "pxelinux.cfg").mkdir(parents=True)
        (root / "pxelinux.cfg" / "default").write_text("x")
        (root / "node01.ipxe").write_text("x")
        (base / "secret").write_text("x")
        (root / "out").symlink_to(base / "secret")
        (root / "outdir").symlink_to(base)
        (root / "in").symlink_to("node01.ipxe")
        _TREE = root
    return _TREE


# Imported by the target when it runs, and before fuzzing (instrumented) by fuzz/run.py.
LAZY_IMPORTS = {"http_resolver": ("oneroot.serve.http",)}


def http_resolver(data: bytes) -> None:
    from oneroot.serve.http import resolve_in_root  # the edge's pure helper

    root = _tree()
    name = data.decode("utf-8", "surrogateescape")
    found = resolve_in_root(root, name)
    if found is None:
        return
    real_root = os.path.realpath(root)
    assert os.path.commonpath([real_root, os.path.realpath(found)]) == real_root, (name, found)
    assert found.is_file(), (name, found)
    assert ".." not in name.split("/"), name
    _plant(found.name == "default" and name[:2] == "./", "http_resolver")


# -- root= -----------------------------------------------------------------------------------

_SCRIPT = (Path(__file__).resolve().parents[1] / "src" / "oneroot" / "initramfs" / "modules"
           / "40-rootspec" / "parse-root.sh")
_DRIVER = """. "$1"
while IFS= read -r line; do
  if rootspec_parse "$line" 2>&1; then printf 'OK\\n%s\\n' "$ROOTSPEC_CANONICAL"; rootspec_print
  else echo ERR; fi
  printf '\\001END\\n'
done
"""
# The end of one answer: a control character, which no spec it is given (`_printable_spec`)
# nor the parser's echo of one can hold (a spec spelled like a text marker ended it early).
_END = "\x01END\n"


class _ShellParser:
    """One `busybox sh` that sources parse-root.sh and parses a spec per input line: the same
    functions the initramfs runs, without a process per input (200 → 5,000 inputs/s)."""

    def __init__(self) -> None:
        found = shutil.which("busybox") or "/bin/busybox"
        private = Path(tempfile.mkdtemp(prefix="oneroot-fuzz-bb-")) / "busybox"
        shutil.copy2(found, private)  # the system busybox may be a wrapper script
        self.proc = subprocess.Popen(
            [str(private), "sh", "-c", _DRIVER, "sh", str(_SCRIPT)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env={"PATH": "/nonexistent", "LC_ALL": "C"})

    def outcome(self, text: str) -> tuple[str, ...]:
        """What parse-root.sh says of `text`, in the corpus's lines (as corpus.outcome does)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        lines: list[str] = []
        while (line := self.proc.stdout.readline()) != _END:
            assert line, "the shell parser died"
            lines.append(line.removesuffix("\n"))
        if lines[-1] == "ERR":
            message, _spec, caret, hint = lines[:-1]
            return (corpus.field("error", message), corpus.field("caret", caret),
                    corpus.field("hint", hint.removeprefix("hint: ")))
        ok = lines.index("OK")
        assert ok == 0, f"the shell parser printed {lines[:ok]} on success"
        canonical = lines[1]
        out = [corpus.field("canon", canonical)] if canonical != text else []
        return (*out, *(corpus.field("layer", row) for row in lines[2:]))


_SHELL: _ShellParser | None = None


def _printable_spec(data: bytes) -> str | None:
    """Kernel command lines are printable ASCII without spaces or quotes (the sh twin's domain)."""
    text = data.decode("ascii", "replace")
    if not text or any(not 0x21 <= ord(c) < 0x7F or c in "\"'\\`$" for c in text):
        return None
    return text


def rootspec(data: bytes, *, differential: bool = False) -> None:
    text = data.decode("utf-8", "surrogateescape")
    try:
        parsed = parser.parse(text)
    except RootSpecError:
        parsed = None
    if parsed is not None:
        canonical = spec.format_spec(parsed)
        assert spec.format_spec(parser.parse(canonical)) == canonical, (text, canonical)
        _plant(len(parsed.layers) >= 4 and isinstance(parsed.layers[-1], spec.TmpfsLayer),
               "rootspec")
    if differential and (printable := _printable_spec(data)) is not None:
        global _SHELL
        if _SHELL is None:
            _SHELL = _ShellParser()
        python = corpus.outcome(printable)
        shell = _SHELL.outcome(printable)
        assert python == shell, f"parsers disagree on {printable!r}:\n{python}\n{shell}"


def rootspec_differential(data: bytes) -> None:
    rootspec(data, differential=True)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "dhcp_codec": dhcp_codec,
    "tftp_codec": tftp_codec,
    "dhcp_responder": dhcp_responder,
    "tftp_transfer": tftp_transfer,
    "http_resolver": http_resolver,
    "rootspec": rootspec_differential,
}
