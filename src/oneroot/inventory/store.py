"""The inventory store interface: `sqlstore.SqlInventory` implements it on SQLite and PostgreSQL.

A store loads a whole `Inventory` and applies a plan of `Change`s in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from oneroot.model.inventory import Change, Inventory


class InventoryStore(Protocol):
    def load(self) -> Inventory: ...

    def apply(self, changes: Sequence[Change]) -> None:
        """Apply every change or none (one transaction)."""
        ...

    def initialized(self) -> bool: ...

    def close(self) -> None: ...
