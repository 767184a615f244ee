"""The canaries `oneroot lab try` runs: one record per canary in `HOME/lab-try/CANARY.json`
(the node it copies, its own address, the process running it), written before the canary's
entry is added to the inventory and removed after it is gone.

The export plan (`ops.nfs_serving.nfs_plan`) reads the records: while a canary runs, the node
it copies has its layer exported read-only to the canary's address too (never the other way:
the canary never gets the node's address). A record whose process is gone (a `lab try`
killed) exports nothing; the next `lab try` removes it and its inventory entry.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from oneroot.fsutil import write_atomic
from oneroot.model.paths import Paths
from oneroot.ops.labcontrol import is_alive, process_start_time

CANARY_PREFIX = "try-"
MAX_RECORD_BYTES = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class CanaryRecord:
    canary: str  # its name in the inventory
    node: str  # the node whose configuration it boots
    address: ipaddress.IPv4Address  # its own
    pid: int  # the `lab try` running it
    start_time: int

    def as_json(self) -> dict[str, object]:
        return {"canary": self.canary, "node": self.node, "address": str(self.address),
                "pid": self.pid, "start_time": self.start_time}

    @classmethod
    def from_json(cls, doc: Mapping[str, object]) -> CanaryRecord:
        return cls(canary=str(doc["canary"]), node=str(doc["node"]),
                   address=ipaddress.IPv4Address(str(doc["address"])),
                   pid=int(str(doc["pid"])), start_time=int(str(doc["start_time"])))

    @property
    def alive(self) -> bool:
        return is_alive(self.pid, self.start_time)


def canary_dir(paths: Paths) -> Path:
    return paths.home / "lab-try"


def canary_name(node: str) -> str:
    """`try-NODE`, cut to a valid name's 63 characters."""
    return (CANARY_PREFIX + node)[:63].rstrip("-_")


def record_canary(paths: Paths, *, canary: str, node: str,
                  address: ipaddress.IPv4Address) -> CanaryRecord:
    """The record of a canary this process runs (written whole: temp, fsync, rename)."""
    pid = os.getpid()
    record = CanaryRecord(canary=canary, node=node, address=address, pid=pid,
                          start_time=process_start_time(pid) or 0)
    directory = canary_dir(paths)
    directory.mkdir(mode=0o700, exist_ok=True)
    write_atomic(directory / f"{canary}.json", json.dumps(record.as_json()).encode())
    return record


def remove_record(paths: Paths, canary: str) -> None:
    (canary_dir(paths) / f"{canary}.json").unlink(missing_ok=True)


def read_canaries(paths: Paths) -> list[CanaryRecord]:
    """Every readable record (a torn, oversized, symlinked or foreign file is not one)."""
    directory = canary_dir(paths)
    if not directory.is_dir():
        return []
    records = []
    for path in sorted(directory.glob("*.json")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as f:
                data = f.read(MAX_RECORD_BYTES + 1)
            if len(data) > MAX_RECORD_BYTES:
                continue
            doc = json.loads(data)
            records.append(CanaryRecord.from_json(doc))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return records


def canary_readers(paths: Paths) -> dict[str, tuple[ipaddress.IPv4Address, ...]]:
    """Node → the addresses of the running canaries that copy it."""
    readers: dict[str, list[ipaddress.IPv4Address]] = {}
    for record in read_canaries(paths):
        if record.alive:
            readers.setdefault(record.node, []).append(record.address)
    return {node: tuple(sorted(set(a))) for node, a in readers.items()}
