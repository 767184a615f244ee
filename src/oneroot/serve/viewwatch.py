"""Keep the masked views current while `oneroot serve` runs (a secret created under a live
root after the view was mounted is masked within one `interval`).

A periodic rescan rather than inotify: the masks depend on every entry's mode under the
system directories (a `chmod 600` changes no directory), and a recursive inotify watch on
`/usr` costs more kernel memory than a walk every 30 s costs CPU (~150k entries, 2 s warm here).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster
from oneroot.ops.nfs_serving import nfs_plan
from oneroot.ops.views import refresh_views

log = logging.getLogger(__name__)


def refresh_once(cluster: ResolvedCluster, paths: Paths) -> int:
    """One rescan of every mounted view; the number of masks added."""
    statuses = refresh_views(nfs_plan(cluster, paths).views.values())
    added = sum(len(s.masks_added) for s in statuses)
    if added:
        log.info("nfs.view.rescanned masks_added=%d", added)
    return added


async def keep_views_current(current: Callable[[], ResolvedCluster], paths: Paths, *,
                             interval: float, lock: asyncio.Lock) -> None:
    """Rescan every `interval` seconds until cancelled; a failed rescan is logged, the next
    one runs anyway."""
    while True:
        await asyncio.sleep(interval)
        try:
            async with lock:
                await asyncio.to_thread(refresh_once, current(), paths)
        except Exception as exc:
            log.error("nfs.view.rescan_failed error=%s", exc)
