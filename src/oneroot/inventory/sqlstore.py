"""The inventory store on SQL: one SQLite file (WAL) or PostgreSQL, with numbered migrations
(`migrations/NNNN_name.sql`, in the SQL both engines take)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import PurePosixPath
from typing import Any

from oneroot.errors import Conflict
from oneroot.inventory.database import Database, Location, open_database
from oneroot.model.cluster import Group, Image, InitSystem, Node, Runlevel
from oneroot.model.imageversion import version_from_json, version_json
from oneroot.model.inventory import (
    Change,
    Inventory,
    settings_from_dict,
    settings_to_dict,
)
from oneroot.net import MacAddress

# On PostgreSQL every applied plan notifies this channel (delivered at commit), so every
# server on the database reloads within its poll interval, without SIGHUP.
CHANGES_CHANNEL = "oneroot_inventory"
# Every table, parents before children (`oneroot db migrate` copies them in this order).
TABLES = ("settings", "runlevels", "images", "groups", "nodes", "node_macs")


def _migrations() -> list[tuple[int, str]]:
    """The numbered `.sql` files of `migrations/`, for SQLite and PostgreSQL alike (TEXT,
    INTEGER, REFERENCES … ON DELETE CASCADE: nothing either engine reads otherwise)."""
    folder = resources.files("oneroot.inventory").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)


class SqlInventory:
    """`InventoryStore` on one SQLite file or a PostgreSQL URL."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self._conn = open_database(location)
        self._conn.migrate("inventory", _migrations())

    @property
    def database(self) -> Database:
        return self._conn

    def close(self) -> None:
        self._conn.close()

    def watch(self) -> bool:
        """Listen for other writers' changes (PostgreSQL); False where changes are not pushed
        (SQLite: watch the file instead)."""
        return self._conn.listen(CHANGES_CHANNEL)

    def changes_seen(self) -> int:
        """How many change notifications arrived since the last call (never waits)."""
        return self._conn.notifications(CHANGES_CHANNEL)

    def initialized(self) -> bool:
        row = self._conn.execute("SELECT count(*) FROM settings").fetchone()
        return bool(row[0])

    # -- reading ------------------------------------------------------------------------------
    def load(self) -> Inventory:
        c = self._conn
        settings = settings_from_dict(
            {k: json.loads(v) for k, v in c.execute("SELECT key, value FROM settings")}
        )
        runlevels = {
            name: Runlevel(name=name, services=tuple(json.loads(svc)), description=desc)
            for name, svc, desc in c.execute("SELECT name, services, description FROM runlevels")
        }
        images = {
            name: Image(name=name, root=PurePosixPath(root), init_system=InitSystem(init),
                        description=desc,
                        expose=tuple(PurePosixPath(p) for p in json.loads(expose)),
                        versions=tuple(version_from_json(v) for v in json.loads(versions)))
            for name, root, init, desc, expose, versions in c.execute(
                "SELECT name, root, init_system, description, expose, versions FROM images")
        }
        groups = {
            name: Group(name=name, description=desc, values=_profile_in(json.loads(profile)))
            for name, desc, profile in c.execute(
                "SELECT name, description, profile FROM groups")
        }
        macs: dict[str, list[MacAddress]] = {}
        for mac, node in c.execute("SELECT mac, node FROM node_macs ORDER BY node, pos"):
            macs.setdefault(node, []).append(MacAddress.parse(mac))
        nodes = {
            name: Node(name=name, macs=tuple(macs.get(name, ())),
                       address=ipaddress.IPv4Address(addr), groups=tuple(json.loads(grps)),
                       overrides=_profile_in(json.loads(ovr)), description=desc)
            for name, addr, grps, ovr, desc in c.execute(
                "SELECT name, address, groups, overrides, description FROM nodes")
        }
        return Inventory(settings=settings, groups=groups, nodes=nodes, images=images,
                         runlevels=runlevels)

    # -- writing ------------------------------------------------------------------------------
    def apply(self, changes: Sequence[Change]) -> None:
        c = self._conn
        c.begin()
        try:
            # Removals first so a rename-by-replace (free a MAC, give it to another) works.
            for ch in sorted(changes, key=lambda ch: ch.action != "remove"):
                self._apply_one(ch)
            if c.dialect == "postgresql":
                c.execute("SELECT pg_notify(?, ?)", (CHANGES_CHANNEL, str(len(changes))))
            c.execute("COMMIT")
        except c.integrity_error as exc:
            c.execute("ROLLBACK")
            detail = str(exc).strip().splitlines()[0]
            raise Conflict(f"the inventory refused the change: {detail}",
                           hint="a name, MAC or address is already in use") from None
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def _apply_one(self, ch: Change) -> None:
        c = self._conn
        if ch.kind == "settings":
            for key, value in settings_to_dict(ch.after).items():
                c.execute("INSERT INTO settings(key, value) VALUES (?, ?) "
                          "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                          (key, json.dumps(value)))
            return
        table = {"group": "groups", "node": "nodes", "image": "images",
                 "runlevel": "runlevels"}[ch.kind]
        if ch.action in ("remove", "change"):
            c.execute(f"DELETE FROM {table} WHERE name=?", (ch.name,))
        if ch.action == "remove":
            return
        obj: Any = ch.after
        if ch.kind == "group":
            c.execute("INSERT INTO groups(name, description, profile) VALUES (?, ?, ?)",
                      (obj.name, obj.description, json.dumps(_profile_out(obj.values))))
        elif ch.kind == "runlevel":
            c.execute("INSERT INTO runlevels(name, services, description) VALUES (?, ?, ?)",
                      (obj.name, json.dumps(list(obj.services)), obj.description))
        elif ch.kind == "image":
            c.execute("INSERT INTO images(name, root, init_system, description, expose, "
                      "versions) VALUES (?, ?, ?, ?, ?, ?)",
                      (obj.name, str(obj.root), str(obj.init_system), obj.description,
                       json.dumps([str(p) for p in obj.expose]),
                       json.dumps([version_json(v) for v in obj.versions])))
        else:
            c.execute("INSERT INTO nodes(name, address, groups, overrides, description) "
                      "VALUES (?, ?, ?, ?, ?)",
                      (obj.name, str(obj.address), json.dumps(list(obj.groups)),
                       json.dumps(_profile_out(obj.overrides)), obj.description))
            c.executemany("INSERT INTO node_macs(mac, node, pos) VALUES (?, ?, ?)",
                          [(str(m), obj.name, i) for i, m in enumerate(obj.macs)])


def _profile_out(values: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _profile_in(values: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
