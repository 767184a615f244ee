"""`python -m oneroot.cli.httpworker`: an HTTP worker of `oneroot serve`, started by serve
itself (serve/httpworkers.py), never by hand. Its configuration comes on stdin; stdout
carries its events back, so anything else it prints goes to stderr, serve's log."""

from __future__ import annotations

import asyncio
import os
import sys

from oneroot.cli.logformat import configure_logging
from oneroot.serve.httpworker import run_worker
from oneroot.serve.httpworkers import read_config


def main() -> None:
    config = read_config(sys.stdin.buffer)
    if config is None:
        raise SystemExit("error: oneroot.cli.httpworker is started by `oneroot serve`")
    events = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print cannot break a frame
    configure_logging(config.log_level, sys.stderr)
    asyncio.run(run_worker(config, events, sys.stdin.buffer))


if __name__ == "__main__":
    main()
