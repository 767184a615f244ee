"""The HTTP worker's event frames: JSON (`serve.httpworkers.event_json` / `json_event`, what
the worker writes and serve reads now) against the pickle frames they replaced, per event
written and read back, in one process, the two taking turns round by round.

    flock /tmp/oneroot-bench.lock .venv/bin/python bench/storm/bench_event_frames.py

Each storm node sends ~9 events through the pipe (its boot files' `http.done`, a `boot.image`,
6 stage reports); the figures are microseconds of one CPU per event, encode and decode.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import pickle
import statistics
import struct
import time
import timeit
from collections.abc import Callable

from oneroot.model.events import BootEvent
from oneroot.serve.httpworkers import event_json, json_event

_FRAME = struct.Struct("!I")
PEER = ipaddress.IPv4Address("10.0.1.23")
EVENTS = {
    "http.done": BootEvent(time=1765141234.5, kind="http.done", node="node0123", peer=PEER,
                           file="vmlinuz", bytes=8_123_456, duration=0.532,
                           detail={"status": "200"}),
    "stage": BootEvent(time=1765141234.5, kind="stage", node="node0123", peer=PEER,
                       stage="layers", detail={"status": "ok", "reported": "layers"}),
}


def pickled(event: BootEvent) -> BootEvent:
    """The frames before: a pickle each."""
    data = pickle.dumps(event, protocol=pickle.HIGHEST_PROTOCOL)
    frame = _FRAME.pack(len(data)) + data
    loaded: BootEvent = pickle.loads(frame[_FRAME.size:])
    return loaded


def as_json(event: BootEvent) -> BootEvent:
    data = event_json(event)
    frame = _FRAME.pack(len(data)) + data
    loaded = json_event(frame[_FRAME.size:])
    assert isinstance(loaded, BootEvent)
    return loaded


def per_event(codec: Callable[[BootEvent], BootEvent], event: BootEvent, number: int) -> float:
    return timeit.timeit(lambda: codec(event), number=number) / number * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--number", type=int, default=20_000, help="events per codec per round")
    args = ap.parse_args()
    print(f"started {time.strftime('%H:%M:%S', time.gmtime())} UTC, load average "
          f"{os.getloadavg()[0]:.1f}, {args.rounds} rounds of {args.number} events per codec")
    print("| event | pickle µs/event | JSON µs/event | JSON / pickle: medians, median of rounds "
          "(range) | bytes pickle / JSON |")
    print("|---|---:|---:|---:|---:|")
    for name, event in EVENTS.items():
        assert pickled(event) == event and as_json(event) == event
        old, new = [], []
        for _ in range(args.rounds):
            old.append(per_event(pickled, event, args.number))
            new.append(per_event(as_json, event, args.number))
        p, j = statistics.median(old), statistics.median(new)
        ratios = sorted(n / o for o, n in zip(old, new, strict=True))
        mid = statistics.median(ratios)
        size_p = len(pickle.dumps(event, protocol=pickle.HIGHEST_PROTOCOL))
        print(f"| {name} | {p:.2f} | {j:.2f} | {j / p:.2f}, {mid:.2f} ({ratios[0]:.2f}–"
              f"{ratios[-1]:.2f}) | {size_p} / {len(event_json(event))} |")
    print(f"ended, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
