"""Export ids for life: persisted beside the inventory so no client ever sees a stale handle."""

from __future__ import annotations

import json
from collections.abc import Mapping

from oneroot.fsutil import write_if_changed
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster
from oneroot.ops.catalog import BootCatalog


def load_export_ids(paths: Paths) -> dict[str, int]:
    try:
        data = json.loads(paths.export_ids.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}


def save_export_ids(paths: Paths, ids: Mapping[str, int]) -> None:
    # Keep ids of removed objects too: a name that comes back gets its old id.
    merged = {**load_export_ids(paths), **ids}
    write_if_changed(paths.export_ids, (json.dumps(merged, sort_keys=True, indent=1) + "\n")
                     .encode())


def keep_export_ids(paths: Paths, ids: Mapping[str, int]) -> None:
    """Save `ids` if any of them is not saved yet: an id goes on disk before a client sees it."""
    known = load_export_ids(paths)
    if any(known.get(k) != v for k, v in ids.items()):
        save_export_ids(paths, ids)


def catalog_for(paths: Paths, cluster: ResolvedCluster, *,
                http_host: str | None = None) -> BootCatalog:
    """A catalog whose export ids are the persisted ones (new objects get new ids, saved)."""
    catalog = BootCatalog(cluster, http_host=http_host,
                          export_ids=load_export_ids(paths))
    keep_export_ids(paths, catalog.export_ids)
    return catalog
