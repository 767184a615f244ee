"""Inventory use-cases: every change is validate → plan → one transaction."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from oneroot.errors import ConfigError, Conflict, InvalidValue, NotFound
from oneroot.fsutil.inside import resolve_inside
from oneroot.inventory import database
from oneroot.inventory.sqlstore import SqlInventory
from oneroot.inventory.store import InventoryStore
from oneroot.model.cluster import (
    Group,
    Image,
    InitSystem,
    Node,
    ProfileValue,
    Runlevel,
    Settings,
    check_expose_path,
    check_name,
    check_profile_value,
)
from oneroot.model.inventory import Change, Inventory, plan, settings_from_dict, validate
from oneroot.model.paths import Paths
from oneroot.model.ranges import expand_names
from oneroot.net import MacAddress
from oneroot.nfs.knfsd import default_nfs_server


def inventory_exists(paths: Paths) -> bool:
    """The home has an inventory: its SQLite file, or a PostgreSQL database it points at."""
    return database.exists(paths, paths.inventory_db)


def open_store(paths: Paths, *, must_exist: bool = True) -> SqlInventory:
    """The home's inventory: its SQLite file, or the PostgreSQL database it points at."""
    if must_exist and not inventory_exists(paths):
        raise ConfigError(f"no inventory at {paths.inventory_db}",
                          hint="run `oneroot init` first (or pass --home DIR)")
    return SqlInventory(database.locate(paths, paths.inventory_db))


def load(store: InventoryStore) -> Inventory:
    return store.load()


def commit(store: InventoryStore, new: Inventory, *, dry_run: bool = False) -> list[Change]:
    """Validate the whole new inventory, then apply its difference in one transaction."""
    validate(new)
    changes = plan(store.load(), new)
    if changes and not dry_run:
        store.apply(changes)
    return changes


def detect_init_system(root: Path) -> InitSystem:
    """What the image boots: systemd, or OpenRC (Debian's sysvinit-core + openrc).

    Reads links without following them out of the image (they may be absolute).
    """
    sbin = _in_image(root, "sbin")
    init = sbin / "init" if sbin is not None else None
    target = str(init.readlink()) if init is not None and init.is_symlink() else ""

    def has(*paths: str) -> bool:
        return any((p := _in_image(root, rel)) is not None and p.exists() for rel in paths)

    if "systemd" in target:
        return InitSystem.SYSTEMD
    if has("sbin/openrc", "usr/sbin/openrc", "sbin/openrc-init", "usr/sbin/openrc-init"):
        return InitSystem.OPENRC
    if has("lib/systemd/systemd", "usr/lib/systemd/systemd"):
        return InitSystem.SYSTEMD
    return InitSystem.UNKNOWN


def _in_image(root: Path, rel: str) -> Path | None:
    """`/rel` of the image at `root`, its links followed inside it; None if they loop or
    use a file as a directory."""
    try:
        return resolve_inside(root, rel)
    except (InvalidValue, OSError):
        return None


def init_cluster(paths: Paths, settings_text: Mapping[str, Any], *, force: bool = False,
                 image_root_on_disk: Path | None = None, db_url: str | None = None
                 ) -> list[Change]:
    """Create the inventory: settings (None values take their defaults; the boot dir is
    HOME/boot, the NFS server `default_nfs_server()`), a `default` group and image. With
    `db_url` (postgresql://…) it lives in that database, and the home points at it once the
    inventory is written."""
    values = {k: v for k, v in settings_text.items() if v is not None}
    values["boot_dir"] = values.get("boot_dir") or str(paths.home / "boot")
    values["block_dir"] = values.get("block_dir") or str(paths.home / "blocks")
    values["nfs_server"] = values.get("nfs_server") or str(default_nfs_server())
    settings = settings_from_dict(values)
    if db_url is not None and not database.is_url(db_url):
        raise InvalidValue(f"--db takes a postgresql:// URL, not {db_url!r}",
                           hint="e.g. --db 'postgresql://oneroot@db.example/oneroot'; without "
                                "--db the inventory is a SQLite file in the home")
    store = SqlInventory(db_url) if db_url else open_store(paths, must_exist=False)
    try:
        if store.initialized() and not force:
            raise Conflict(f"{describe_location(paths)} is already initialized",
                           hint="change settings with `oneroot settings set`, or pass --force")
        old = store.load()
        root_dir = image_root_on_disk or Path(settings.image_root)
        images = dict(old.images)
        images.setdefault("default", Image(name="default", root=settings.image_root,
                                           init_system=detect_init_system(root_dir),
                                           description="the server's root, as in the seed"
                                           if str(settings.image_root) == "/" else ""))
        groups = dict(old.groups)
        groups.setdefault("default", Group(name="default", description="every node",
                                           values={}))
        changes = commit(store, old.replace(settings=settings, images=images, groups=groups))
        if db_url is not None:
            database.point_home_at(paths, db_url)
        return changes
    finally:
        store.close()


def describe_location(paths: Paths) -> str:
    """Where the home's inventory is, for messages (a URL without its password)."""
    url = database.database_url(paths)
    return database.redact(url) if url else str(paths.inventory_db)


# -- nodes ------------------------------------------------------------------------------------


def parse_overrides(pairs: Iterable[str]) -> dict[str, ProfileValue]:
    out: dict[str, ProfileValue] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidValue(f"expected KEY=VALUE, got {pair!r}",
                               hint="e.g. --set runlevel=computenode")
        out[key.strip()] = check_profile_value(key.strip(), value)
    return out


def read_macs(macs: Sequence[str], macs_file: Path | None) -> list[MacAddress]:
    texts: list[str] = []
    for m in macs:
        texts.extend(p for p in m.replace(",", " ").split() if p)
    if macs_file is not None:
        try:
            lines = macs_file.read_text().splitlines()
        except OSError as exc:
            raise InvalidValue(f"cannot read MAC list {macs_file}: {exc.strerror}") from None
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if line:
                texts.append(line.split()[0])
    return [MacAddress.parse(t) for t in texts]


def _free_addresses(inv: Inventory, start: ipaddress.IPv4Address | None
                    ) -> Iterable[ipaddress.IPv4Address]:
    s = inv.settings
    used = {n.address for n in inv.nodes.values()} | {s.server_address}
    if s.gateway:
        used.add(s.gateway)
    pool = (set() if s.pool_start is None or s.pool_end is None else
            {ipaddress.IPv4Address(i) for i in range(int(s.pool_start), int(s.pool_end) + 1)})
    first = int(start) if start else int(s.server_address) + 1
    for i in range(first, int(s.subnet.broadcast_address)):
        addr = ipaddress.IPv4Address(i)
        if start is not None or (addr not in used and addr not in pool):
            yield addr


def add_nodes(store: InventoryStore, *, names: str, macs: Sequence[MacAddress],
              start_ip: ipaddress.IPv4Address | None, groups: Sequence[str],
              overrides: Mapping[str, ProfileValue], description: str = "",
              dry_run: bool = False) -> list[Change]:
    inv = store.load()
    expanded = expand_names(names)
    for name in expanded:
        check_name("node", name)
        if name in inv.nodes:
            raise Conflict(f"node {name!r} already exists",
                           hint="change it with `oneroot node set`, or pick another name")
    if len(macs) != len(expanded):
        raise InvalidValue(f"{len(expanded)} node(s) but {len(macs)} MAC address(es)",
                           hint="give one MAC per node (--mac, repeated, or --macs-file)")
    s = inv.settings
    if start_ip is not None:
        last = int(start_ip) + len(expanded) - 1
        if start_ip not in s.subnet:
            raise InvalidValue(f"start address {start_ip} is outside the subnet {s.subnet}",
                               hint="pick an address inside the cluster subnet")
        if last >= int(s.subnet.broadcast_address):
            raise InvalidValue(
                f"{len(expanded)} address(es) from {start_ip} overflow the subnet {s.subnet}",
                hint="start lower, add fewer nodes, or widen the subnet")
    addresses = list(_take(_free_addresses(inv, start_ip), len(expanded)))
    if len(addresses) < len(expanded):
        raise InvalidValue(f"the subnet {s.subnet} has no room for {len(expanded)} more nodes",
                           hint="widen the subnet or remove nodes")
    new_nodes = [
        Node(name=name, macs=(mac,), address=addr, groups=tuple(groups) or ("default",),
             overrides=dict(overrides), description=description)
        for name, mac, addr in zip(expanded, macs, addresses, strict=True)
    ]
    return commit(store, inv.with_nodes(new_nodes), dry_run=dry_run)


def _take(it: Iterable[ipaddress.IPv4Address], n: int) -> Iterable[ipaddress.IPv4Address]:
    for i, x in enumerate(it):
        if i >= n:
            return
        yield x


def get_node(inv: Inventory, name: str) -> Node:
    try:
        return inv.nodes[name]
    except KeyError:
        raise NotFound(f"no node named {name!r}", hint="see `oneroot node list`") from None


def select_nodes(inv: Inventory, pattern: str) -> list[Node]:
    names = expand_names(pattern)
    return [get_node(inv, n) for n in names]


def set_node(store: InventoryStore, pattern: str, *, overrides: Mapping[str, ProfileValue],
             unset: Sequence[str] = (), macs: Sequence[MacAddress] | None = None,
             address: ipaddress.IPv4Address | None = None,
             groups: Sequence[str] | None = None, description: str | None = None
             ) -> list[Change]:
    inv = store.load()
    nodes = select_nodes(inv, pattern)
    if (macs is not None or address is not None) and len(nodes) != 1:
        raise InvalidValue("--mac and --ip change one node at a time",
                           hint="name a single node")
    updated = []
    for node in nodes:
        values = dict(node.overrides)
        for key in unset:
            if key not in values:
                raise NotFound(f"node {node.name!r} does not override {key!r}",
                               hint=f"`oneroot node show {node.name}` lists its values")
            del values[key]
        values.update(overrides)
        updated.append(dataclasses.replace(
            node, overrides=values,
            macs=tuple(macs) if macs is not None else node.macs,
            address=address or node.address,
            groups=tuple(groups) if groups is not None else node.groups,
            description=node.description if description is None else description))
    return commit(store, inv.with_nodes(updated))


def remove_nodes(store: InventoryStore, pattern: str) -> list[Change]:
    inv = store.load()
    nodes = select_nodes(inv, pattern)
    remaining = {k: v for k, v in inv.nodes.items() if k not in {n.name for n in nodes}}
    return commit(store, inv.replace(nodes=remaining))


# -- groups -----------------------------------------------------------------------------------


def get_group(inv: Inventory, name: str) -> Group:
    try:
        return inv.groups[name]
    except KeyError:
        raise NotFound(f"no group named {name!r}", hint="see `oneroot group list`") from None


def add_group(store: InventoryStore, name: str, values: Mapping[str, ProfileValue],
              description: str = "") -> list[Change]:
    inv = store.load()
    check_name("group", name)
    if name in inv.groups:
        raise Conflict(f"group {name!r} already exists", hint="change it with `oneroot group set`")
    groups = {**inv.groups, name: Group(name=name, description=description, values=dict(values))}
    return commit(store, inv.replace(groups=groups))


def set_group(store: InventoryStore, name: str, values: Mapping[str, ProfileValue],
              unset: Sequence[str] = (), description: str | None = None) -> list[Change]:
    inv = store.load()
    group = get_group(inv, name)
    merged = dict(group.values)
    for key in unset:
        if key not in merged:
            raise NotFound(f"group {name!r} does not set {key!r}")
        del merged[key]
    merged.update(values)
    new = dataclasses.replace(group, values=merged,
                              description=group.description if description is None
                              else description)
    return commit(store, inv.replace(groups={**inv.groups, name: new}))


def remove_group(store: InventoryStore, name: str) -> list[Change]:
    inv = store.load()
    get_group(inv, name)
    users = sorted(n.name for n in inv.nodes.values() if name in n.groups)
    if users:
        more = f" and {len(users) - 3} more" if len(users) > 3 else ""
        raise Conflict(f"group {name!r} is used by {', '.join(users[:3])}{more}",
                       hint="remove it from those nodes first (`oneroot node set --groups`)")
    return commit(store, inv.replace(groups={k: v for k, v in inv.groups.items() if k != name}))


# -- runlevels and images -----------------------------------------------------------------------


def put_runlevel(store: InventoryStore, name: str, services: Sequence[str],
                 description: str = "", *, create: bool) -> list[Change]:
    inv = store.load()
    check_name("runlevel", name)
    if create and name in inv.runlevels:
        raise Conflict(f"runlevel {name!r} already exists")
    if not create and name not in inv.runlevels:
        raise NotFound(f"no runlevel named {name!r}", hint="see `oneroot runlevel list`")
    rl = Runlevel(name=name, services=tuple(services), description=description)
    return commit(store, inv.replace(runlevels={**inv.runlevels, name: rl}))


def remove_runlevel(store: InventoryStore, name: str) -> list[Change]:
    inv = store.load()
    if name not in inv.runlevels:
        raise NotFound(f"no runlevel named {name!r}", hint="see `oneroot runlevel list`")
    return commit(store, inv.replace(
        runlevels={k: v for k, v in inv.runlevels.items() if k != name}))


def put_image(store: InventoryStore, name: str, root: Path,
              init_system: InitSystem | None = None, description: str = "",
              expose: Sequence[str] | None = None) -> list[Change]:
    """Add or replace image `name`. `expose`: paths of a live root nodes may see beyond its
    system directories (None keeps the image's current list)."""
    inv = store.load()
    check_name("image", name)
    if not root.is_dir():
        raise InvalidValue(f"image root {root} is not a directory",
                           hint="give the directory that holds the image's /etc, /usr, ...")
    old = inv.images.get(name)
    resolved = PurePosixPath(root.resolve())
    image = Image(name=name, root=resolved,
                  init_system=init_system or detect_init_system(root),
                  description=description,
                  expose=(old.expose if old is not None else ()) if expose is None else
                  tuple(dict.fromkeys(check_expose_path(p) for p in expose)),
                  # the same root again keeps the image's versions; another root starts over
                  versions=old.versions if old is not None and old.root == resolved else ())
    return commit(store, inv.replace(images={**inv.images, name: image}))


def update_settings(store: InventoryStore, values: Mapping[str, Any]) -> list[Change]:
    inv = store.load()
    settings: Settings = settings_from_dict(values, base=inv.settings)
    return commit(store, inv.replace(settings=settings))
