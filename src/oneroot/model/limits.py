"""Limits on what unauthenticated network input may cost the server: one named value each.

Anyone on the boot network can send DHCP and TFTP packets and HTTP requests, so every table,
queue and string that such input grows has a bound here, with its default. `oneroot serve`
takes one `Limits` and passes it down; tests build smaller ones to hit each bound quickly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

from oneroot.errors import InvalidValue

DAY = 86400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    # TFTP
    tftp_sessions: int = 1024  # transfers at once, all clients (256 failed a 1,000-node storm)
    tftp_sessions_per_client: int = 8  # transfers at once from one IP address
    tftp_lockstep_threads: int = 4  # a thread per lock-step transfer while at most this many run
    # A client's `timeout` option (RFC 2349) above this many seconds is not accepted: the
    # server's own 1 s retransmit timer (with backoff) applies. At 255 s a silent client held a
    # session for 25 minutes; at 5 s it is gone within a minute.
    tftp_option_timeout: int = 5
    # HTTP: boot-file bodies of 1 MiB or more sent by a thread of their own (one blocking
    # sendfile, off the event loop) while fewer than this many are being sent; the others on
    # the loop (serve/sendfile.py). 0: every body on the loop.
    http_sendfile_threads: int = 2
    # ... and a big body that finds them all busy waits this many seconds for one (first come,
    # first served: nodes get their files in turn), then goes on the loop. 0: no wait.
    http_sendfile_wait: float = 10.0
    # Processes of their own that answer HTTP (boot files, scripts, reports) next to serve's
    # DHCP and TFTP, so a boot storm uses more than one CPU (serve/httpworkers.py). 0: serve's
    # own process answers HTTP.
    http_workers: int = 1

    # Boot events and the rows DHCP keeps about strangers
    event_text: int = 256  # characters kept of a file name, stage, node or MAC in an event
    event_detail_text: int = 512  # characters kept of each detail value (stage messages...)
    event_detail_keys: int = 16  # detail entries kept per event
    events_kept: int = 100_000  # newest events kept; older ones are pruned
    events_max_age: float = 30 * DAY  # seconds an event is kept
    events_pending: int = 10_000  # events waiting for their write; more are dropped (counted)
    unknown_clients_kept: int = 4096  # most recently seen unknown clients kept
    unknown_clients_max_age: float = 30 * DAY  # seconds since last seen before one is dropped
    vendor_class_text: int = 128  # characters kept of an unknown client's vendor class
    declined_kept: int = 1024  # quarantined (declined) addresses kept; expired ones are dropped
    prune_interval: float = 60.0  # seconds between retention passes
    # Pool clients' renewals waiting for a read of the shared lease database (a lease another
    # server bound: several servers on one PostgreSQL); more are dropped (counted), and the
    # clients ask again
    lease_rereads_pending: int = 256

    # Work a node's HTTP/TFTP fetch of its boot script triggers (remount, whiteout pass)
    boot_work_queue: int = 64  # per-node jobs waiting at once; more are dropped (logged)
    boot_work_debounce: float = 5.0  # seconds after a node's job before it may run again
    # Its boot-script fetch counts as a boot only this long after the node's DHCP answer
    # (a running node, or a forger, fetching the script triggers nothing).
    boot_window: float = 300.0

    # Stage reports (POST /api/v1/report)
    stage_message_text: int = 500  # characters kept of a stage report's message
    stage_status_text: int = 32  # characters allowed in a stage report's status

    # The web status page (GET /api/v1/stream, server-sent events)
    status_streams: int = 32  # browsers following the page at once, both listeners together

    # Boot files fetched from another server (several servers on one database)
    payload_bytes: int = 4 * 1024**3  # largest boot file fetched; a peer sending more is cut
    payload_files: int = 10_000  # files of the boot directory indexed and published


DEFAULT_LIMITS = Limits()
# Limits that may be 0: none of that kind at all (every lock-step transfer, every file
# body on the loop, no wait for a sendfile thread).
ZERO_MEANS_NONE = frozenset({"tftp_lockstep_threads", "http_sendfile_threads",
                             "http_sendfile_wait", "http_workers"})


def limits_from_pairs(pairs: Iterable[str], base: Limits = DEFAULT_LIMITS) -> Limits:
    """`base` with `NAME=VALUE` pairs applied (`oneroot serve --limit tftp_sessions=64`)."""
    types = {f.name: f.type for f in fields(Limits)}
    changes: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name = name.strip()
        if not sep or name not in types:
            raise InvalidValue(f"unknown limit {pair!r}",
                               hint=f"NAME=VALUE, with NAME one of: {', '.join(types)}")
        try:
            value: int | float = int(raw) if types[name] in (int, "int") else float(raw)
        except ValueError:
            raise InvalidValue(f"limit {name} must be a number, not {raw!r}") from None
        if value < 0 or (value == 0 and name not in ZERO_MEANS_NONE):
            raise InvalidValue(f"limit {name} must be positive, not {raw!r}")
        changes[name] = value
    return replace(base, **changes)
