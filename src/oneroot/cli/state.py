"""What every command shares, and the one way to reach it: `@pass_state` gives a `State`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import click

from oneroot.inventory.sqlstore import SqlInventory
from oneroot.model.inventory import Inventory
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster, resolve_cluster
from oneroot.ops import inventory as inv_ops


@dataclass(slots=True)
class State:
    """What every command shares: where oneroot keeps its state (`--home`)."""

    paths: Paths

    @contextlib.contextmanager
    def store(self) -> Iterator[SqlInventory]:
        store = inv_ops.open_store(self.paths)
        try:
            yield store
        finally:
            store.close()

    def load(self) -> Inventory:
        """The inventory as stored now (the store is closed again)."""
        with self.store() as store:
            return store.load()

    def cluster(self) -> ResolvedCluster:
        """The inventory as stored now, resolved once: what every `ops` use-case takes."""
        return resolve_cluster(self.load())


pass_state = click.make_pass_decorator(State)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def operator() -> str:
    """Who asked: the user behind sudo when there is one."""
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or "unknown"
