"""The inventory as serve's services read it: loaded and resolved once per change, swapped
whole on a reload (serve's main process and each HTTP worker hold one)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from oneroot.model.inventory import Inventory
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster, resolve_cluster
from oneroot.model.server import ONE_SERVER, ServerRole
from oneroot.ops import inventory as inv_ops
from oneroot.ops.exportids import catalog_for

log = logging.getLogger(__name__)


class CatalogHolder:
    """The current catalog; services read it on every request, reloads swap it."""

    def __init__(self, paths: Paths, http_host: str | None,
                 role: ServerRole = ONE_SERVER) -> None:
        self.paths = paths
        self.http_host = http_host
        self.role = role
        # Held open while serve runs: SQLite keeps the inventory's WAL index (-shm) as long as
        # one connection is open, so `oneroot status` can still open it on a full disk.
        self._keeper = inv_ops.open_store(paths)
        # PostgreSQL pushes other writers' changes to this connection (LISTEN/NOTIFY); a
        # SQLite home is watched by its file's size and time.
        self._pushed = self._keeper.watch()
        self._changes = 0
        # Resolved once per load; everything below takes this object.
        self.cluster: ResolvedCluster = resolve_cluster(self._load())
        self.catalog = catalog_for(paths, self.cluster, http_host=http_host)
        self._stamp = self._db_stamp()
        self.listeners: list[Callable[[ResolvedCluster], None]] = []

    @property
    def inventory(self) -> Inventory:
        return self.cluster.inventory

    def close(self) -> None:
        self._keeper.close()

    def _load(self) -> Inventory:
        store = inv_ops.open_store(self.paths)
        try:
            inventory = store.load()
        finally:
            store.close()
        return inventory.replace(settings=self.role.apply(inventory.settings))

    def _db_stamp(self) -> tuple[float, ...]:
        if self._pushed:
            self._changes += self._keeper.changes_seen()
            return (float(self._changes),)
        stamps = []
        for suffix in ("", "-wal"):
            try:
                stat = Path(str(self.paths.inventory_db) + suffix).stat()
                stamps += [stat.st_mtime_ns, stat.st_size]
            except FileNotFoundError:
                stamps += [0, 0]
        return tuple(stamps)

    def reload(self, *, force: bool = False) -> bool:
        inventory = self.changed(force=force)
        return inventory is not None and self.install(inventory, force=force)

    def changed(self, *, force: bool = False) -> Inventory | None:
        """The inventory if the database says it changed (or `force`), else None: the
        database half of `reload()`, safe in a worker thread (it may wait on the network)."""
        stamp = self._db_stamp()
        if stamp == self._stamp and not force:
            return None
        self._stamp = stamp
        return self._load()

    def install(self, inventory: Inventory, *, force: bool = False) -> bool:
        """Make `inventory` current if it differs (on the loop: listeners run here)."""
        if inventory != self.inventory or force:
            self.cluster = resolve_cluster(inventory)
            self.catalog = catalog_for(self.paths, self.cluster, http_host=self.http_host)
            for listener in self.listeners:
                listener(self.cluster)
            log.info("inventory.reloaded nodes=%d groups=%d", len(inventory.nodes),
                     len(inventory.groups))
            return True
        return False


async def watch_inventory(holder: CatalogHolder, interval: float) -> None:
    """Reload on changes; while the database cannot be read (PostgreSQL down, a locked or
    half-migrated file) keep serving the catalog last loaded, and say so once."""
    failing = False
    while True:
        await asyncio.sleep(interval)
        try:
            inventory = await asyncio.to_thread(holder.changed, force=failing)
            if inventory is not None:
                holder.install(inventory)
        except Exception as exc:
            if not failing:
                log.error("inventory.reload_failed keeping=last loaded inventory (%d nodes) "
                          "error=%s: %s", len(holder.inventory.nodes), type(exc).__name__,
                          str(exc).strip())
            failing = True
            continue
        if failing:
            log.warning("inventory.reload_recovered nodes=%d", len(holder.inventory.nodes))
        failing = False
