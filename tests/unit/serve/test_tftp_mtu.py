"""The serving interface's MTU, read from sysfs, bounds the blksize TFTP offers."""

from __future__ import annotations

from pathlib import Path

from oneroot.proto.tftp import BytesSource, ReadRequest, ReadTransfer, blksize_for_mtu
from oneroot.serve.tftp import FALLBACK_BLKSIZE, TftpService, blksize_for_interface, interface_mtu


def test_loopback_mtu_is_read() -> None:
    mtu = int(Path("/sys/class/net/lo/mtu").read_text())
    assert interface_mtu("lo") == mtu
    assert blksize_for_interface("lo") == blksize_for_mtu(mtu)


def test_unreadable_mtu_falls_back_to_ethernet(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "mtu").write_text("jumbo\n")
    assert interface_mtu("bad", sys_net=tmp_path) is None
    assert interface_mtu("missing", sys_net=tmp_path) is None
    assert blksize_for_interface("no-such-if0") == FALLBACK_BLKSIZE == 1468


def test_max_blksize_applies_to_transfers_started_after(tmp_path: Path) -> None:
    service = TftpService(bind="127.0.0.1", root=tmp_path)
    request = ReadRequest(filename="f", mode="octet", options=(("blksize", "65464"),))
    before = ReadTransfer(BytesSource(b"x"), request, service.config, now=0.0)
    service.max_blksize = 8968
    after = ReadTransfer(BytesSource(b"x"), request, service.config, now=0.0)
    assert (before.stats.blksize, after.stats.blksize) == (1468, 8968)
    assert service.max_blksize == 8968
