"""A hostile host on the boot network attacks `oneroot serve`, started as a user starts it.

One lab network (network namespaces: the server's bridge, and three hosts on it): node01 (an
inventory node, static address), a pool client (discovery is on) and an attacker with an
address no node has. The server's state (inventory, leases, events) lives on a small tmpfs.
Each test makes one attack, asserts that it failed, and that nothing was lost: leases, layers
and inventory intact, DHCP, TFTP and HTTP still answering. The disk-filling test runs last.
"""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from oneroot.lab import Lab
from oneroot.lab.netns import Client
from oneroot.testing.dhcpclient import Udhcpc
from oneroot.testing.netns import STATE_DIR
from oneroot.testing.wait import until

pytestmark = pytest.mark.integration

ONEROOT = [sys.executable, "-m", "oneroot"]
SERVER = "10.93.0.1"
NODE01_MAC, NODE01_IP = "52:54:00:93:00:11", "10.93.0.11"
POOL_MAC = "52:54:00:93:00:50"
ATTACKER_MAC, ATTACKER_IP = "52:54:00:93:00:66", "10.93.0.66"
TMPFS_SIZE = "16m"

# Runs in a host's namespace: DHCP messages with any chaddr, from the host's own frames.
DHCP_SENDER = """
import ipaddress, json, socket, sys
from oneroot.net import MacAddress
from oneroot.proto.dhcp import BootOp, DhcpOptions, DhcpPacket
for spec in json.loads(sys.stdin.read()):
    opts = [(53, bytes([spec["type"]])), (54, ipaddress.IPv4Address(sys.argv[1]).packed)]
    if spec.get("server_id_first"):  # option 53 not first: the link filter's other branch
        opts.reverse()
    if spec.get("requested"):
        opts.append((50, ipaddress.IPv4Address(spec["requested"]).packed))
    if spec.get("vendor"):
        opts.append((60, bytes.fromhex(spec["vendor"])))
    packet = DhcpPacket(op=BootOp.REQUEST, xid=7, chaddr=MacAddress.parse(spec["mac"]).packed,
                        options=DhcpOptions(opts))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
    s.sendto(packet.to_bytes(), (spec.get("to", sys.argv[1]), 67))
    s.close()
"""

# Runs in the attacker's namespace: open many TFTP sessions, never ACK, keep the sockets (a
# closed socket would answer the server's retransmits with ICMP and free the session).
TFTP_HOG = """
import json, socket, sys, time
from oneroot.proto.tftp import Data, Error, ReadRequest, parse_packet
count, server = int(sys.argv[1]), sys.argv[2]
socks = []
for _ in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(ReadRequest(filename="big.bin", mode="octet").to_bytes(), (server, 69))
    socks.append(s)
granted, refused = 0, []
deadline = time.monotonic() + 20  # every RRQ is answered (DATA or ERROR): a bound, not a wait
for s in socks:
    s.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        packet = parse_packet(s.recv(2048))
    except OSError:
        continue
    if isinstance(packet, Data):
        granted += 1
    elif isinstance(packet, Error):
        refused.append(packet.message)
print(json.dumps({"granted": granted, "refused": refused}), flush=True)
time.sleep(float(sys.argv[3]))
"""

TFTP_TIMEOUT_PROBE = """
import json, socket, sys, time
from oneroot.proto.tftp import Error, ErrorCode, ReadRequest, parse_packet
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(30)  # the first answer: how fast it comes is not what is measured
s.sendto(ReadRequest(filename="big.bin", mode="octet",
                     options=(("timeout", "255"), ("blksize", "1024"))).to_bytes(),
         (sys.argv[1], 69))
first, tid = s.recvfrom(2048)
started = time.monotonic()
s.settimeout(4)
try:
    again = s.recv(2048)
    resent = time.monotonic() - started
except TimeoutError:
    again, resent = b"", None
s.sendto(Error(code=ErrorCode.NOT_DEFINED, message="bye").to_bytes(), tid)
print(json.dumps({"first": repr(parse_packet(first)), "resent_after": resent}))
"""


@dataclass
class Net:
    lab: Lab
    home: Path
    tmp: Path
    log: Path
    proc: subprocess.Popen[bytes]
    node01: Client
    pool: Client
    attacker: Client
    dhcp: Udhcpc

    def oneroot(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ONEROOT, "--home", str(self.home), *args], check=check,
                              capture_output=True, text=True, timeout=60)

    def run(self, host: Client, *argv: str, timeout: float = 60, stdin: str | None = None
            ) -> subprocess.CompletedProcess[str]:
        return self.lab.run_in_ns(argv, netns=host.netns, check=False, timeout=timeout,
                                  input=stdin)

    def python(self, host: Client, code: str, *args: str, stdin: str | None = None) -> str:
        result = self.run(host, sys.executable, "-c", code, *args, stdin=stdin)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def send_dhcp(self, host: Client, *messages: dict[str, object]) -> None:
        self.python(host, DHCP_SENDER, SERVER, stdin=json.dumps(list(messages)))

    def udhcpc(self, host: Client) -> dict[str, str]:
        return self.dhcp.lease(lambda *argv, timeout: self.run(host, *argv, timeout=timeout),
                               host.interface)

    def curl(self, host: Client, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(host, "curl", "-sS", "-m", "10", *args)

    def wait_log(self, text: str, *, count: int = 1, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while (log := self.log.read_text(errors="replace")).count(text) < count:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged {count} times:\n{log[-4000:]}")
            time.sleep(0.05)
        return log

    def unknown(self) -> dict[str, dict[str, object]]:
        rows = json.loads(self.oneroot("node", "unknown", "--json").stdout)
        return {str(r["mac"]): r for r in rows}

    def assert_serving(self) -> None:
        """DHCP, TFTP and HTTP answer node01; its inventory and layer are intact."""
        assert self.proc.poll() is None, self.log.read_text()[-4000:]
        assert self.udhcpc(self.node01).get("ip") == NODE01_IP, self.log.read_text()[-4000:]
        self.assert_tftp(self.node01)
        assert self.curl(self.node01, f"http://{SERVER}:8080/healthz").stdout == "ok\n"
        nodes = json.loads(self.oneroot("node", "list", "--json").stdout)
        assert [n["name"] for n in nodes] == ["node01"]
        assert (self.upper / "etc" / "hostname").read_text() == "node01\n"

    def assert_tftp(self, host: Client) -> None:
        """A real TFTP client (curl) on `host` gets big.bin whole."""
        out = self.tmp / "fetched.bin"
        out.unlink(missing_ok=True)
        fetched = self.curl(host, f"tftp://{SERVER}/big.bin", "-o", str(out))
        assert fetched.returncode == 0, fetched.stderr
        assert hashlib.sha256(out.read_bytes()).hexdigest() == BIG_SHA

    @property
    def upper(self) -> Path:
        return self.tmp / "state" / "node01" / "upper"


BIG = bytes(range(256)) * 256  # 64 KiB: a transfer nobody ACKs stalls after its first block
BIG_SHA = hashlib.sha256(BIG).hexdigest()


def _host(lab: Lab, mac: str, address: str | None) -> Client:
    host = lab.add_client(f"{address}/24" if address else None)
    for step in (["down"], ["address", mac], ["up"]):
        lab.run_in_ns(["ip", "link", "set", "dev", "eth0", *step], netns=host.netns)
    return host


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("hostile")
    dhcp = Udhcpc.install(tmp)
    (tmp / "boot").mkdir()
    (tmp / "boot" / "big.bin").write_bytes(BIG)
    (tmp / "image").mkdir()
    home = tmp / "home"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs",
                    str(home)], check=True)
    Lab.cleanup_stale(STATE_DIR)
    try:
        with Lab.create(subnet="10.93.0.0/24", server_address=SERVER, state_dir=STATE_DIR,
                        router_advertisements=False) as lab:
            base = [*ONEROOT, "--home", str(home)]
            for argv in (
                ["init", "--server", SERVER, "--subnet", "10.93.0.0/24", "--interface",
                 lab.bridge, "--image-root", str(tmp / "image"), "--boot-dir",
                 str(tmp / "boot"), "--state-dir", str(tmp / "state"), "--http-port", "8080"],
                # layer_fs=shared: serve runs in its own mount namespace here, and the test
                # writes node01's layer from the host (ops.layerfs)
                ["settings", "set", "discovery=true", "pool_start=10.93.0.200",
                 "pool_end=10.93.0.210", f"group_dir={tmp / 'groups'}", "layer_fs=shared"],
                ["node", "add", "node01", "--mac", NODE01_MAC, "--ip", NODE01_IP],
            ):
                subprocess.run([*base, *argv], check=True, capture_output=True)
            upper = tmp / "state" / "node01" / "upper"
            (upper / "etc").mkdir(parents=True)
            (upper / "etc" / "hostname").write_text("node01\n")
            node01 = _host(lab, NODE01_MAC, NODE01_IP)
            pool = _host(lab, POOL_MAC, None)
            attacker = _host(lab, ATTACKER_MAC, ATTACKER_IP)
            log = tmp / "serve.log"
            with log.open("wb") as out:
                proc = lab.popen_in_ns([*base, "serve"], what="oneroot serve", stdout=out,
                                       stderr=subprocess.STDOUT)
            net = Net(lab=lab, home=home, tmp=tmp, log=log, proc=proc, node01=node01,
                      pool=pool, attacker=attacker, dhcp=dhcp)
            net.wait_log("serve.started", timeout=60)
            yield net
            lab.stop_process(proc)
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)


# -- TFTP ------------------------------------------------------------------------------------

def test_tftp_session_exhaustion(net: Net) -> None:
    """300 sessions from one host: it gets its per-client share, node01 still gets its file."""
    hog = net.lab.popen_in_ns([sys.executable, "-c", TFTP_HOG, "300", SERVER, "20"],
                              netns=net.attacker.netns, what="tftp hog", stdout=subprocess.PIPE)
    try:
        assert hog.stdout is not None
        result = json.loads(hog.stdout.readline())
        assert result["granted"] <= 8, result
        assert "too many transfers from this address" in result["refused"]
        net.assert_tftp(net.node01)
    finally:
        net.lab.stop_process(hog)
    net.assert_serving()


def test_tftp_option_timeout_is_capped(net: Net) -> None:
    """timeout=255 is not accepted: the server retransmits on its own short timer."""
    result = json.loads(net.python(net.node01, TFTP_TIMEOUT_PROBE, SERVER))
    assert "timeout" not in result["first"], result
    assert result["resent_after"] is not None and result["resent_after"] < 3, result
    net.assert_serving()


# -- DHCP DECLINE ----------------------------------------------------------------------------

def test_decline_spoofing(net: Net) -> None:
    held = net.udhcpc(net.pool).get("ip", "")
    assert held.startswith("10.93.0.2"), net.log.read_text()[-3000:]
    assert net.unknown()[POOL_MAC]["address"] == held
    decline = 4
    net.send_dhcp(
        net.attacker,
        {"type": decline, "mac": POOL_MAC, "requested": held},  # forged chaddr
        {"type": decline, "mac": NODE01_MAC, "requested": NODE01_IP},  # a node's address
        {"type": decline, "mac": ATTACKER_MAC, "requested": "10.93.0.209"},  # not its lease
    )
    log = net.wait_log("dhcp.decline ", count=3)  # all three handled (not a fixed sleep)
    assert net.unknown()[POOL_MAC]["address"] == held  # the holder's lease survives
    assert log.count("result=DECLINE refused") >= 3, log[-3000:]
    assert net.udhcpc(net.pool).get("ip") == held  # and it renews it
    net.assert_serving()
    # The holder itself may decline it (from its own frames): the check is not a blanket no.
    # Its DECLINE starts with option 54: the packet socket's kernel filter, which drops what
    # starts with a message type other than DECLINE, must let it up to be read.
    net.lab.run_in_ns(["ip", "addr", "add", f"{held}/24", "dev", "eth0"], netns=net.pool.netns)
    net.send_dhcp(net.pool, {"type": decline, "mac": POOL_MAC, "requested": held,
                             "server_id_first": True})
    net.wait_log("result=address declined")
    # serve logs its decision, then writes it (a worker thread); `node unknown` reads the file
    until(lambda: net.unknown()[POOL_MAC].get("address") is None, "the declined lease gone",
          60, lambda: f"{net.unknown()[POOL_MAC]}")
    net.lab.run_in_ns(["ip", "addr", "del", f"{held}/24", "dev", "eth0"], netns=net.pool.netns)


# -- HTTP ------------------------------------------------------------------------------------

def _plant_whiteout(net: Net) -> Path:
    whiteout = net.upper / "etc" / ".wh.motd"
    whiteout.write_bytes(b"")
    return whiteout


def test_forged_http_trigger_does_no_work(net: Net) -> None:
    whiteout = _plant_whiteout(net)
    script = net.curl(net.attacker, f"http://{SERVER}:8080/boot/node01.ipxe")
    assert script.returncode == 0 and "#!ipxe" in script.stdout  # public, and harmless
    net.wait_log("boot.work_refused node=node01 peer=" + ATTACKER_IP)  # decided, then:
    assert whiteout.exists() and stat.S_ISREG(whiteout.lstat().st_mode)  # untouched
    # node01 booting (a DHCP answer, then its own fetch) gets the work done, once.
    assert net.udhcpc(net.node01).get("ip") == NODE01_IP
    assert net.curl(net.node01, f"http://{SERVER}:8080/boot/node01.ipxe").returncode == 0
    net.wait_log("overlay.whiteouts_normalized node=node01")
    motd = net.upper / "etc" / "motd"
    assert stat.S_ISCHR(motd.lstat().st_mode) and not whiteout.exists()
    # Once node01 runs (it reported a stage), its own fetch touches nothing either.
    posted = net.curl(net.node01, "-d", "stage=init&status=ok&message=up",
                      f"http://{SERVER}:8080/api/v1/report")
    assert posted.stdout == "ok\n"
    whiteout = _plant_whiteout(net)
    refused = net.log.read_text().count("boot.work_refused node=node01")
    assert net.curl(net.node01, f"http://{SERVER}:8080/boot/node01.ipxe").returncode == 0
    net.wait_log("boot.work_refused node=node01", count=refused + 1)
    assert stat.S_ISREG(whiteout.lstat().st_mode)
    whiteout.unlink()
    motd.unlink()
    net.assert_serving()


def test_forged_stage_posts_are_refused(net: Net) -> None:
    url = f"http://{SERVER}:8080/api/v1/report"
    mark = len(net.log.read_text())
    for host, body, code in [
        (net.attacker, "stage=failed&status=failed&message=pwned", "403"),
        (net.node01, "stage=tftp&status=ok", "400"),  # not a stage a node reports
        (net.node01, "stage=init&status=owned", "400"),
        (net.node01, "stage=init&status=ok&message=%1b%5d0%3bowned%07", "400"),
    ]:
        posted = net.curl(host, "-o", "/dev/null", "-w", "%{http_code}", "-d", body, url)
        assert posted.stdout == code, (body, posted)
    # None was recorded: a report is logged as it is recorded, and once node01's own report,
    # sent after them, is in the log (and its stage in the store, written a moment later by
    # the batch writer), so is anything they made. A status read at once raced that writer.
    reports = net.log.read_text().count("stage.report")
    assert net.curl(net.node01, "-d", "stage=init&status=ok&message=after", url).stdout == "ok\n"
    net.wait_log("stage.report", count=reports + 1)
    assert net.log.read_text()[mark:].count("stage.report") == 1
    until(lambda: _stage(net) == ("init", json.dumps({"message": "after", "reported": "init",
                                                      "status": "ok"}, sort_keys=True)),
          "node01's own report in oneroot status", 60, lambda: str(_stage(net)))
    net.assert_serving()


def _stage(net: Net) -> tuple[str, str]:
    doc = json.loads(net.oneroot("status", "--json").stdout)
    node = next(n for n in doc["nodes"] if n["node"] == "node01")
    return node["stage"], json.dumps(node["detail"], sort_keys=True)


# -- the terminal ----------------------------------------------------------------------------

def test_markup_and_escapes_reach_the_terminal_as_text(net: Net) -> None:
    markup = "[/x] [bold red]boom [link=http://evil]x"
    posted = net.curl(net.node01, "--data-urlencode", "stage=failed",
                      "--data-urlencode", "status=failed", "--data-urlencode",
                      f"message={markup}", f"http://{SERVER}:8080/api/v1/report")
    assert posted.stdout == "ok\n", posted
    hostile_mac = "52:54:00:93:00:77"
    vendor = b"PXEClient\x1b]0;owned\x07\x1b[2J[/x]"
    net.send_dhcp(net.attacker, {"type": 1, "mac": hostile_mac, "vendor": vendor.hex(),
                                 "to": "255.255.255.255"})
    deadline = time.monotonic() + 60
    while hostile_mac not in net.unknown():
        assert time.monotonic() < deadline, net.log.read_text()[-3000:]
        time.sleep(0.1)
    status = net.oneroot("status", check=False)
    assert status.returncode == 0, status.stderr
    assert markup in status.stdout
    unknown = net.oneroot("node", "unknown", check=False)
    assert unknown.returncode == 0, unknown.stderr
    for out in (status.stdout, status.stderr, unknown.stdout, unknown.stderr):
        assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;owned\\x07\\x1b[2J[/x]" in unknown.stdout
    net.assert_serving()


# -- the disk ----------------------------------------------------------------------------------

def test_event_flood_until_the_disk_is_full(net: Net) -> None:
    """Refused 30 KB names and strangers' DISCOVERs are bounded; then the disk fills anyway
    (another writer): DHCP still answers node01, the failure is loud, nothing is lost."""
    flood = """
import os, socket, sys, time
from oneroot.proto.tftp import WriteRequest
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for n in range(int(sys.argv[2])):
    name = f"{n:06d}" + "x" * 30000
    s.sendto(WriteRequest(filename=name, mode="octet").to_bytes(), (sys.argv[1], 69))
    if n % 50 == 0:
        time.sleep(0.01)
"""
    held = net.udhcpc(net.pool).get("ip", "")  # (strangers' DISCOVERs then empty the pool)
    assert held.startswith("10.93.0.2")
    net.python(net.attacker, flood, SERVER, "800")  # 24 MB of names before the caps
    strangers = [{"type": 1, "mac": f"02:91:00:00:{n >> 8:02x}:{n & 0xFF:02x}",
                  "vendor": (b"v" * 250).hex(), "to": "255.255.255.255"} for n in range(300)]
    net.send_dhcp(net.attacker, *strangers)
    # The server drains its sockets (a fixed 2 s was too short under load).
    log = net.wait_log("tftp.error", count=101, timeout=120)
    assert max(len(line) for line in log.splitlines()) < 2000  # the log is bounded too
    assert net.proc.poll() is None
    used = sum(p.stat().st_size for p in net.home.glob("events.db*"))
    assert used < 4 * 1024 * 1024, used

    filler = net.home / "filler"
    with filler.open("wb") as out:  # the disk fills up
        try:
            while True:
                out.write(b"\0" * (1 << 20))
                out.flush()
        except OSError:
            pass
    try:
        strangers = [{"type": 1, "mac": f"02:92:00:00:{n >> 8:02x}:{n & 0xFF:02x}",
                      "vendor": (b"w" * 120).hex(), "to": "255.255.255.255"}
                     for n in range(1500)]
        net.send_dhcp(net.attacker, *strangers)
        net.wait_log("dhcp.lease_commit_failed", timeout=30)
        assert net.udhcpc(net.node01).get("ip") == NODE01_IP  # still ACKed
        status = net.oneroot("status", check=False)
        assert "DHCP lease writes are failing" in status.stderr, status
    finally:
        filler.unlink()
    assert net.udhcpc(net.pool).get("ip") == held  # its lease was kept throughout
    assert net.unknown()[POOL_MAC]["address"] == held
    net.assert_serving()
    assert "Traceback" not in net.log.read_text()
