"""Run oneroot's TftpService alone, for the benchmark: until SIGTERM/SIGINT.

    .venv/bin/python bench/tftp/run_oneroot.py --root DIR --port P [--max-blksize 8192]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from oneroot.serve.tftp import TftpService


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--max-blksize", type=int, default=8192)
    parser.add_argument("--max-windowsize", type=int, default=64)
    parser.add_argument("--max-sessions", type=int, default=256)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    service = TftpService(bind=args.bind, port=args.port, root=args.root,
                          max_blksize=args.max_blksize, max_windowsize=args.max_windowsize,
                          max_sessions=args.max_sessions)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.close)
    await service.run()
    print(service.stats, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
