"""Where things are on the server's disk: oneroot's own state (`Paths`) and the cluster's
directories that the settings name (`ClusterDirs`), as concrete `Path`s.

The settings keep `PurePosixPath`s: they are also what nodes mount (`root=`, exports). Code that
opens them on this server takes them from here, not by converting a setting itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from oneroot.model.cluster import Settings

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
    def database_url_file(self) -> Path:
        """Holds the PostgreSQL URL when the home's inventory, leases and events live there."""
        return self.home / "database.url"

    @property
    def export_ids(self) -> Path:
        return self.home / "export-ids.json"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def views_dir(self) -> Path:
        return self.home / "views"

    def identity_dir(self, node: str) -> Path:
        """Where a node's seed, SSH host keys and manifest live: under oneroot's home, which no
        export shows (the masked view empties it)."""
        return self.home / "nodes" / node


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterDirs:
    """The settings' directories on this server's disk."""

    state_dir: Path
    group_dir: Path
    boot_dir: Path
    image_root: Path

    @classmethod
    def of(cls, s: Settings) -> ClusterDirs:
        return cls(state_dir=Path(s.state_dir), group_dir=Path(s.group_dir),
                   boot_dir=Path(s.boot_dir), image_root=Path(s.image_root))

    def node_dir(self, node: str) -> Path:
        """The node's diff-overlay directory (`Settings.diff_overlay_dir`), holding `upper/`
        and `work/` (and `merged/` for a server-side union)."""
        return self.state_dir / node

    def node_upper(self, node: str) -> Path:
        return self.node_dir(node) / "upper"

    def group_layer_dir(self, group: str) -> Path:
        return self.group_dir / group
