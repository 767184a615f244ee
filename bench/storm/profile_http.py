"""Server CPU per node of serve's HTTP side in a boot storm, in one process, on loopback.

`HttpService` as `oneroot serve` builds it (the EventRecorder on an EventStore, the status
board listening, serve's `configure_logging` writing to a file at info), with N nodes at
127.0.1.x; a client process makes, for each node from its own address, what a storm node
makes (bench/storm/client.py): GET its iPXE script, the kernel and the initramfs it names
(8 MB and 4 MB, the lab's sizes), then 6 stage reports, each on a new connection, `--clients`
nodes at once. Times are CPU time of this process (all its threads: the loop, the sendfile
threads, the events' writes), so the machine's other load disturbs them less than it disturbs
the storm's wall times; the figure is the best of `--repeat` runs. The kernel's part of each
body (sendfile on loopback copies it into the client's socket) is in it, as it is in a storm.

    .venv/bin/python bench/storm/profile_http.py [--nodes 200] [--clients 8] [--repeat 3]
        [--profile [--sort cumulative]]   (cProfile of the loop's thread, its CPU time; slower)

A profiling tool, not a test: it starts the service's parts as serve does, without sockets
other than loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import pstats
import re
import socket
import sys
import tempfile
import time
from pathlib import Path

from oneroot.cli.logformat import configure_logging
from oneroot.inventory.events import EventStore
from oneroot.model.resolved import resolve_cluster
from oneroot.ops.catalog import BootCatalog
from oneroot.serve.events import EventRecorder
from oneroot.serve.http import HttpService
from oneroot.serve.statusboard import StatusBoard
from oneroot.testing.inventory import loopback_settings, make_inventory, make_node
from oneroot.testing.ports import free_port

SIZES = {"vmlinuz": 8_247_232, "initramfs.img": 3_985_087}
STAGES = ("dhcp", "layers", "union", "switch_root", "init", "runlevel")


def _address(index: int) -> str:
    return f"127.0.1.{index}" if index < 255 else f"127.0.{1 + index // 250}.{index % 250 + 1}"


async def run(nodes: int, clients: int, work: Path, profiler: cProfile.Profile | None, *,
              file_bytes: int | None) -> float:
    """µs of CPU per node."""
    boot = work / "boot"
    boot.mkdir()
    for name, size in SIZES.items():
        (boot / name).write_bytes(os.urandom(size if file_bytes is None else file_bytes))
    inventory = make_inventory(nodes=[make_node(i, address=_address(i))
                                      for i in range(1, nodes + 1)],
                               settings=loopback_settings(work))
    catalog = BootCatalog(resolve_cluster(inventory))
    log_file = (work / "serve.log").open("w")
    logging.getLogger().handlers.clear()  # the previous repetition's
    configure_logging("info", log_file)
    events = EventStore(work / "events.db")
    recorder = EventRecorder(events, lambda ip: catalog.by_address.get(ip))
    board = StatusBoard(lambda: {n.name: n.address for n in inventory.nodes.values()},
                        max_streams=32)
    recorder.listeners.append(board)
    port = free_port()
    service = HttpService(bind="127.0.0.1", port=port, boot_dir=boot, catalog=lambda: catalog,
                          on_event=recorder, status=dict, board=board)
    await service.start()
    writer = asyncio.create_task(recorder.run())
    started = time.process_time()
    if profiler is not None:
        profiler.enable()
    client = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--client", str(port), str(nodes), str(clients))
    assert await client.wait() == 0, "the client failed"
    await recorder.flush()
    if profiler is not None:
        profiler.disable()
    spent = time.process_time() - started
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    await service.close()
    board.close()
    events.close()
    for handler in logging.getLogger().handlers:
        handler.flush()
    logging.getLogger().handlers.clear()
    log_file.close()
    return spent / nodes * 1e6


# --- the client (another process) ---

def _request(port: int, source: str, head: str, body: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=60,
                                  source_address=(source, 0)) as conn:
        conn.sendall(head.encode() + body)
        chunks = []
        while chunk := conn.recv(1 << 20):
            chunks.append(chunk)
    answer = b"".join(chunks)
    if b" 200 " not in answer.split(b"\r\n", 1)[0]:
        raise RuntimeError(answer[:200].decode(errors="replace"))
    return answer


def _node(port: int, index: int) -> None:
    source = _address(index)
    get = "GET /boot/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    script = _request(port, source, get.format(f"node{index:02d}.ipxe")).decode()
    for url in re.findall(r"^(?:kernel|initrd) http://[^/]+/boot/(\S+)", script, re.M):
        _request(port, source, get.format(url))
    for stage in STAGES:
        body = f"stage={stage}&status=ok&message=".encode()
        _request(port, source, "POST /api/v1/report HTTP/1.1\r\nHost: x\r\nConnection: close"
                 "\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: "
                 f"{len(body)}\r\n\r\n", body)


def _client(port: int, nodes: int, clients: int) -> None:
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(clients) as pool:
        for result in pool.map(lambda i: _node(port, i), range(1, nodes + 1)):
            del result


def main() -> None:
    if sys.argv[1:2] == ["--client"]:
        _client(*(int(a) for a in sys.argv[2:5]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="tottime", help="of the profile: tottime, cumulative")
    parser.add_argument("--file-bytes", type=int,
                        help="kernel and initramfs of this size (default: the lab's): 1000 "
                             "leaves the bodies' kernel copies out, the Python side alone")
    args = parser.parse_args()
    best = float("inf")
    for _ in range(args.repeat):
        profiler = cProfile.Profile(time.thread_time) if args.profile else None  # the loop's CPU
        with tempfile.TemporaryDirectory() as tmp:
            best = min(best, asyncio.run(run(args.nodes, args.clients, Path(tmp), profiler,
                                             file_bytes=args.file_bytes)))
        if profiler is not None:
            pstats.Stats(profiler, stream=sys.stdout).sort_stats(args.sort).print_stats(40)
    sizes = "the lab's" if args.file_bytes is None else f"{args.file_bytes} B"
    print(f"{best:.0f} µs of CPU per node in serve's HTTP side (script, kernel and initramfs "
          f"of {sizes}, 6 reports; {args.clients} nodes at once, best of {args.repeat})")


if __name__ == "__main__":
    main()
