"""Server CPU per DORA exchange of serve's DHCP service, in one process, without sockets.

`DhcpService` as `oneroot serve` builds it (a LeaseStore at synchronous=NORMAL with deferred
checkpoints, the EventRecorder on an EventStore, serve's `configure_logging` writing to a file at
info), fed batches of DISCOVERs, then of the matching REQUESTs, through the method its socket
reader calls; its two UDP sockets are replaced by a sink. What it leaves out is the
kernel's part (recvfrom, the broadcast's delivery inside sendto), which `bench_dhcp.py` counts.
Times are CPU time of this process (all its threads), so the machine's other load disturbs
them less than it disturbs the bench's rates; the figure is the best of `--repeat` runs.

    .venv/bin/python bench/dhcp/profile_serve.py [--exchanges 10000] [--batch 8] [--repeat 4]
        [--profile]   (cProfile of the timed part; slower)

It reaches into `DhcpService` (its loop, sockets and `_serve`): a profiling tool, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import pstats
import sys
import tempfile
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from oneroot.cli.logformat import configure_logging
from oneroot.inventory.events import EventStore
from oneroot.inventory.leases import LeaseStore
from oneroot.net import MacAddress
from oneroot.proto.dhcp import BootOp, DhcpOptions, DhcpPacket, MessageType, NetworkConfig
from oneroot.serve.dhcp import DhcpService
from oneroot.serve.events import EventRecorder

SERVER = IPv4Address("10.1.0.1")
PRL = bytes((1, 3, 6, 12, 15, 51, 54))
CLIENT = ("0.0.0.0", 68)
CHECKPOINT_EVERY = 256  # group commits, as the service's own checkpoints
FLUSH_EVERY = 12  # batches between event writes: serve's recorder writes every 50 ms


class _Sink:
    """Stands for the service's UDP socket: takes replies, sends nothing."""

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        return len(data)

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass


def _chaddr(index: int) -> bytes:
    return b"\x02\x00\x00" + index.to_bytes(3, "big")


def _message(mtype: MessageType, index: int, *extra: tuple[int, bytes]) -> bytes:
    options = DhcpOptions([(53, bytes((mtype,))), *extra, (55, PRL)])
    return DhcpPacket(op=BootOp.REQUEST, xid=index, flags=0x8000, chaddr=_chaddr(index),
                      options=options).to_bytes()


async def run(exchanges: int, batch: int, work: Path,
              profiler: cProfile.Profile | None) -> float:
    """µs of CPU per exchange."""
    log_file = (work / "serve.log").open("w")
    configure_logging("info", log_file)
    leases = LeaseStore(work / "leases.db", synchronous="NORMAL")
    leases.defer_checkpoints()
    events = EventStore(work / "events.db")
    recorder = EventRecorder(events, lambda address: None)
    network = NetworkConfig(server_address=SERVER, subnet=IPv4Network("10.1.0.0/16"),
                            router=SERVER, dns=(SERVER,),
                            pool=(IPv4Address("10.1.0.10"), IPv4Address("10.1.255.250")))
    service = DhcpService(interface="lo", server_address=SERVER, network=network,
                          lookup=lambda mac: None, leases=leases, on_event=recorder,
                          is_reserved=lambda address: False, pool_events=False)
    service._loop = asyncio.get_running_loop()
    service._sockets[67] = _Sink()  # type: ignore[assignment]
    spent = 0.0
    for first in range(1, exchanges + 1, batch):
        indexes = range(first, min(first + batch, exchanges + 1))
        discovers = [(_message(MessageType.DISCOVER, i), CLIENT) for i in indexes]
        started = time.process_time()
        if profiler is not None:
            profiler.enable()
        service._serve(discovers, 67)
        if profiler is not None:
            profiler.disable()
        spent += time.process_time() - started
        requests = []
        for i in indexes:
            lease = leases.lease_for_mac(MacAddress(_chaddr(i)))
            assert lease is not None, "no offer"
            requests.append((_message(MessageType.REQUEST, i, (50, lease.address.packed),
                                      (54, SERVER.packed)), CLIENT))
        started = time.process_time()
        if profiler is not None:
            profiler.enable()
        service._serve(requests, 67)
        if first // batch % CHECKPOINT_EVERY == 0:
            leases.checkpoint()
        if first // batch % FLUSH_EVERY == 0:  # in a worker thread, as the recorder does
            await recorder.flush()
        if profiler is not None:
            profiler.disable()
        spent += time.process_time() - started
    started = time.process_time()
    await recorder.flush()
    spent += time.process_time() - started
    service.close()
    leases.close()
    events.close()
    for handler in logging.getLogger().handlers[:]:  # this repetition's, before its file goes
        handler.flush()
        logging.getLogger().removeHandler(handler)
        handler.close()
    log_file.close()
    return spent / exchanges * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exchanges", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    best = float("inf")
    for _ in range(args.repeat):
        profiler = cProfile.Profile() if args.profile else None
        with tempfile.TemporaryDirectory() as tmp:
            best = min(best, asyncio.run(run(args.exchanges, args.batch, Path(tmp), profiler)))
        if profiler is not None:
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(30)
    print(f"{best:.1f} µs of CPU per DORA exchange in DhcpService (batch {args.batch}, "
          f"best of {args.repeat})")


if __name__ == "__main__":
    main()
