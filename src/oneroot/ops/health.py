"""The running server's health record, for `oneroot status`: written even on a full disk.

`oneroot serve` reports what must be seen at once (DHCP lease writes failing, events dropped)
in `run/serve-health.json`. The file is made at start at its full size and later rewritten in
place, never grown or renamed: on a full disk no new block is needed, so the one report that
matters most still reaches the administrator. A reader that catches a rewrite half-way (the
JSON does not parse) reads again.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from oneroot.model.paths import Paths

RECORD_SIZE = 4096
_FILE = "serve-health.json"


def health_path(paths: Paths) -> Path:
    return paths.run_dir / _FILE


class HealthRecord:
    """The writer's side: `HealthRecord(paths)` allocates, `update({...})` rewrites in place."""

    def __init__(self, paths: Paths) -> None:
        path = health_path(paths)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        self._doc: dict[str, Any] = {}
        self.update({"pid": os.getpid(), "started": time.time()})

    def update(self, sections: dict[str, Any]) -> None:
        """Merge `sections` into the record and rewrite it."""
        self._doc.update(sections)
        data = json.dumps(self._doc, sort_keys=True, default=str).encode()
        if len(data) > RECORD_SIZE - 1:
            data = json.dumps({"error": "health record too large"}).encode()
        os.pwrite(self._fd, data.ljust(RECORD_SIZE - 1) + b"\n", 0)
        os.fsync(self._fd)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.update({"stopped": time.time()})
        os.close(self._fd)


def health_warnings(doc: dict[str, Any]) -> list[str]:
    """What a person must be told about a running server's record (empty: nothing)."""
    if not doc or "stopped" in doc:
        return []
    dhcp = doc.get("dhcp") or {}
    if not dhcp.get("lease_commit_failing"):
        return []
    return [f"DHCP lease writes are failing ({dhcp.get('lease_commit_failures')} failures, "
            f"{dhcp.get('replies_dropped')} pool replies dropped): {dhcp.get('last_error')}"]


def read_health(paths: Paths) -> dict[str, Any]:
    """The last record, or {} when no server wrote one (or it is unreadable)."""
    for _ in range(3):
        try:
            text = health_path(paths).read_bytes()[:RECORD_SIZE]
        except OSError:
            return {}
        try:
            doc = json.loads(text)
        except ValueError:
            time.sleep(0.01)  # caught during a rewrite
            continue
        return doc if isinstance(doc, dict) else {}
    return {}
