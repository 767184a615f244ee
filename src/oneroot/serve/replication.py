"""Boot files kept alike on every server of one database (`ops.payloads` does the work).

Every `SCAN_SECONDS` (and after an inventory reload) the server indexes its boot directory,
publishes it, and fetches, by content hash, each file another server holds newer or it lacks.
It also does so before serve starts answering, and before it answers an HTTP request for a
boot file it does not have (`ensure`). Database and network work run in a worker thread, one
job at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from pathlib import Path

from oneroot.inventory.database import Location
from oneroot.inventory.payloads import PayloadStore, Wanted
from oneroot.model.limits import Limits
from oneroot.ops.payloads import BootIndex, PayloadRefused, fetch_payload

log = logging.getLogger(__name__)

SCAN_SECONDS = 2.0
# What the others hold is read at most once per WANTED_TTL seconds for requests of missing
# files: a flood of misses costs one query a second (and waits, one at a time).
WANTED_TTL = 1.0


class PayloadReplicator:
    def __init__(self, location: Location, *, boot_dir: Path, server: str, url: str,
                 peers: tuple[str, ...], limits: Limits) -> None:
        self.index = BootIndex(boot_dir, max_files=limits.payload_files)
        self.boot_dir = boot_dir
        self.server = server
        self.url = url
        self.peers = peers
        self.max_bytes = limits.payload_bytes
        self._store = PayloadStore(location)
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._wanted: dict[str, Wanted] = {}
        self._wanted_at = -WANTED_TTL
        self._published: frozenset[tuple[str, str]] = frozenset()
        self._failing = False

    def close(self) -> None:
        self._store.close()

    def poke(self) -> None:
        """Sync soon (the inventory changed: new kernels may be named)."""
        self._wake.set()

    def path_for(self, sha256: str) -> Path | None:
        return self.index.path_for(sha256)

    async def sync(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._sync)

    async def ensure(self, name: str) -> bool:
        """Whether `name`, missing here, could be fetched from another server (then it is
        here, verified)."""
        async with self._lock:
            return await asyncio.to_thread(self._ensure, name)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SCAN_SECONDS)
            self._wake.clear()
            try:
                await self.sync()
            except Exception as exc:  # the database or a peer away: serve what is here
                if not self._failing:
                    log.error("payload.sync_failed error=%s: %s", type(exc).__name__,
                              str(exc).strip())
                self._failing = True
                continue
            if self._failing:
                log.warning("payload.sync_recovered")
            self._failing = False

    # --- in the worker thread ---

    def _sync(self) -> None:
        self._publish()
        fetched = 0
        for name, wanted in self._read_wanted(fresh=True).items():
            if name in self.index.settling:  # being written here: the local copy will win
                continue
            if self.index.sha256_of(name) != wanted.sha256:
                fetched += self._fetch(wanted)
        if fetched:
            self._publish()

    def _ensure(self, name: str) -> bool:
        wanted = self._read_wanted(fresh=False).get(name)
        if wanted is None:  # published since the last read? Read again, at most once a TTL
            time.sleep(max(0.0, self._wanted_at + WANTED_TTL - time.monotonic()))
            wanted = self._read_wanted(fresh=True).get(name)
        if wanted is None or name in self.index.settling:
            return False
        if self.index.sha256_of(name) == wanted.sha256 and (self.boot_dir / name).is_file():
            return True
        if not self._fetch(wanted):
            return False
        self._publish()
        return True

    def _publish(self) -> None:
        files = self.index.scan()
        self._store.publish(self.server, self.url, files, now=time.time())
        published = frozenset((f.name, f.sha256) for f in files)
        if published != self._published:
            log.info("payload.published server=%s files=%d", self.server, len(files))
        self._published = published

    def _read_wanted(self, *, fresh: bool) -> dict[str, Wanted]:
        now = time.monotonic()
        if fresh or now - self._wanted_at >= WANTED_TTL:
            self._wanted = self._store.wanted(exclude=self.server)
            self._wanted_at = now
        return self._wanted

    def _fetch(self, wanted: Wanted) -> int:
        extra = tuple(p for p in self.peers if p not in wanted.sources)
        if not wanted.sources and not extra:
            return 0
        try:
            source = fetch_payload(self.boot_dir,
                                   dataclasses.replace(wanted, sources=wanted.sources + extra),
                                   max_bytes=self.max_bytes)
        except PayloadRefused as exc:
            log.warning("payload.refused name=%s sha256=%s error=%s", wanted.name,
                        wanted.sha256[:12], exc)
            return 0
        self.index.learn(wanted.name, wanted.sha256)
        log.info("payload.fetched name=%s sha256=%s bytes=%d from=%s", wanted.name,
                 wanted.sha256[:12], wanted.size, source)
        return 1
