"""A PXE ROM's TFTP size probe (RRQ with tsize, the OACK, then ERROR 0 "TFTP Aborted" before
any data, at every boot) is counted as a probe, not a failed transfer: no tftp.error event, so
the status page's recent errors stay clean. ERROR 8 (the client refuses our options) still is
an error. Both the lock-step (thread) and the windowed (loop) path, on loopback.
(test_tftp_clients.py is at the 600-line module limit, so this has a module of its own.)
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from oneroot.model.events import BootEvent
from oneroot.proto.tftp import Error, ErrorCode, OptionAck, ReadRequest, parse_packet
from oneroot.serve.tftp import TftpService, TftpServiceStats

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"


async def _probe(root: Path, code: ErrorCode, options: tuple[tuple[str, str], ...]
                 ) -> tuple[TftpServiceStats, list[BootEvent]]:
    events: list[BootEvent] = []
    loop = asyncio.get_running_loop()
    async with TftpService(bind=HOST, port=0, root=root, on_event=events.append,
                           timeout=5.0) as service:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((HOST, 0))
            sock.setblocking(False)
            request = ReadRequest(filename="pxelinux.0", mode="octet", options=options)
            await loop.sock_sendto(sock, request.to_bytes(), (HOST, service.port))
            data, tid = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), 30.0)
            oack = parse_packet(data)
            assert isinstance(oack, OptionAck) and ("tsize", "3000") in oack.options
            message = "TFTP Aborted" if code == ErrorCode.NOT_DEFINED else "options refused"
            await loop.sock_sendto(sock, Error(code=code, message=message).to_bytes(), tid)
            deadline = loop.time() + 30.0  # the lock-step thread hands the end back to us
            while service.stats.active and loop.time() < deadline:
                await asyncio.sleep(0.01)
        return service.stats, events


@pytest.mark.parametrize("windowsize", ["1", "4"], ids=["lockstep", "window"])
@pytest.mark.parametrize(("code", "probe"), [(ErrorCode.NOT_DEFINED, True),
                                             (ErrorCode.OPTION_REFUSED, False)],
                         ids=["aborted", "option-refused"])
def test_size_probe_is_not_an_error(tmp_path: Path, windowsize: str, code: ErrorCode,
                                    probe: bool) -> None:
    (tmp_path / "pxelinux.0").write_bytes(b"p" * 3000)
    options = (("tsize", "0"), ("blksize", "1468"), ("windowsize", windowsize))
    stats, events = asyncio.run(_probe(tmp_path, code, options))
    errors = [e for e in events if e.kind == "tftp.error"]
    assert (stats.transfers, stats.active) == (1, 0)
    if probe:
        assert errors == []
        assert (stats.probes, stats.failed, stats.errors) == (1, 0, 0)
    else:
        assert (stats.probes, stats.failed, stats.errors, len(errors)) == (0, 1, 1, 1)
        assert errors[0].detail["code"] == "8"
