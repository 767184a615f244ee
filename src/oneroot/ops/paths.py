"""Where oneroot keeps its state on the server."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = Path("/var/lib/oneroot")


@dataclass(frozen=True, slots=True, kw_only=True)
class Paths:
    home: Path = DEFAULT_HOME

    @property
    def inventory_db(self) -> Path:
        return self.home / "inventory.db"

    @property
    def leases_db(self) -> Path:
        return self.home / "leases.db"

    @property
    def events_db(self) -> Path:
        return self.home / "events.db"

    @property
    def export_ids(self) -> Path:
        return self.home / "export-ids.json"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"
