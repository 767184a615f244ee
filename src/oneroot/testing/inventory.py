"""An inventory factory for tests and benchmarks: predictable nodes, groups and settings.

    inv = make_inventory(nodes=2)          # node01 10.0.0.11 52:54:00:00:00:01, node02 …12 …02
    inv = make_inventory(nodes=[make_node(1, union="server", groups=("default", "compute"))],
                         groups=[layer_group("compute")], settings=settings_under(tmp_path))

Every inventory has a `default` group and a `default` image; nodes are numbered from 1.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from oneroot.model import (
    Group,
    Image,
    InitSystem,
    LayerFs,
    Node,
    ProfileValue,
    Runlevel,
    Settings,
)
from oneroot.model.inventory import Inventory
from oneroot.net import MacAddress

FIRST_ADDRESS = ipaddress.IPv4Address("10.0.0.10")  # node N gets FIRST_ADDRESS + N
LOOPBACK = ipaddress.IPv4Address("127.0.0.1")


def node_mac(index: int) -> MacAddress:
    """52:54:00:00:HH:LL, HHLL being `index`."""
    return MacAddress(bytes([0x52, 0x54, 0, 0, (index >> 8) & 0xFF, index & 0xFF]))


def make_node(index: int, *, name: str | None = None,
              address: str | ipaddress.IPv4Address | None = None,
              groups: tuple[str, ...] = ("default",), **overrides: ProfileValue) -> Node:
    """Node `index`: `node01`, MAC `node_mac(index)`, address 10.0.0.(10+index) unless given;
    keyword arguments beyond these are its profile overrides (`union="server"`)."""
    return Node(name=name or f"node{index:02d}", macs=(node_mac(index),),
                address=(ipaddress.IPv4Address(address) if address is not None
                         else FIRST_ADDRESS + index),
                groups=groups, overrides=overrides)


def layer_group(name: str, **values: ProfileValue) -> Group:
    """A group whose own directory is a layer of its nodes (`group_layer=true`)."""
    return Group(name=name, values={"group_layer": True, **values})


def settings_under(base: Path, **values: Any) -> Settings:
    """Settings whose state dir and group dir are `base/systems` and `base/groups`. Layers
    are plain directories (`layer_fs=shared`) unless `values` says otherwise: a test that
    wants each layer a filesystem of its own (the default) unmounts them itself."""
    return Settings(**{"state_dir": PurePosixPath(base / "systems"),
                       "group_dir": PurePosixPath(base / "groups"),
                       "layer_fs": LayerFs.SHARED, **values})


def loopback_settings(base: Path, **values: Any) -> Settings:
    """`settings_under(base)` for a server at 127.0.0.1 serving 127.0.0.0/8: a test's NFS
    server on loopback, with node01 as the client at 127.0.0.1."""
    return settings_under(base, server_address=LOOPBACK,
                          subnet=ipaddress.IPv4Network("127.0.0.0/8"), **values)


def make_inventory(*, nodes: int | Iterable[Node] = 2, groups: Iterable[Group] = (),
                   settings: Settings | None = None,
                   image_root: str | Path | PurePosixPath = "/",
                   init_system: InitSystem = InitSystem.UNKNOWN,
                   images: Iterable[Image] = (),
                   runlevels: Iterable[Runlevel] = ()) -> Inventory:
    """An inventory of `nodes` (a count: node01… from `make_node`), the `default` group plus
    `groups`, the `default` image at `image_root` plus `images`, and `runlevels`."""
    node_list = ([make_node(i) for i in range(1, nodes + 1)] if isinstance(nodes, int)
                 else list(nodes))
    group_map = {"default": Group(name="default")} | {g.name: g for g in groups}
    image_map = {"default": Image(name="default", root=PurePosixPath(image_root),
                                  init_system=init_system)} | {i.name: i for i in images}
    return Inventory(settings=settings or Settings(), nodes={n.name: n for n in node_list},
                     groups=group_map, images=image_map,
                     runlevels={r.name: r for r in runlevels})
