"""The declarative YAML form of an inventory, for keeping a cluster in git.

    settings: {server_address: 10.0.0.1, subnet: 10.0.0.0/24, ...}
    runlevels: {computenode: {services: [slurmd], description: ...}}
    images: {default: {root: /, init_system: systemd}}
    groups: {default: {kernel: vmlinuz, kernel_args: [quiet]}}
    nodes: {node01: {mac: [52:54:00:00:00:01], ip: 10.0.0.11, groups: [default], set: {...}}}

`export` writes every object in name order, so the same inventory gives the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

import yaml

from oneroot.errors import InvalidValue
from oneroot.model.cluster import (
    Group,
    Image,
    Node,
    Runlevel,
    check_expose_path,
    check_profile_value,
)
from oneroot.model.imageversion import ImageVersion, version_from_json, version_json
from oneroot.model.inventory import (
    Inventory,
    check_init_system,
    settings_from_dict,
    settings_to_dict,
)
from oneroot.net import MacAddress, parse_ipv4


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `52:54:00:00:00:05` as a base-60 integer; MACs must stay text."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if not (tag == "tag:yaml.org,2002:int" and ":" in regexp.pattern)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(values.items())}


def to_yaml(inv: Inventory) -> str:
    doc: dict[str, Any] = {
        "settings": settings_to_dict(inv.settings),
        "runlevels": {
            n: {"services": list(r.services), "description": r.description}
            for n, r in sorted(inv.runlevels.items())
        },
        "images": {
            n: {"root": str(i.root), "init_system": str(i.init_system),
                "description": i.description,
                **({"expose": [str(p) for p in i.expose]} if i.expose else {}),
                **({"versions": [version_json(v) for v in i.versions]} if i.versions else {})}
            for n, i in sorted(inv.images.items())
        },
        "groups": {
            n: {"description": g.description, **_plain(g.values)}
            for n, g in sorted(inv.groups.items())
        },
        "nodes": {
            n: {
                "mac": [str(m) for m in node.macs],
                "ip": str(node.address),
                "groups": list(node.groups),
                **({"set": _plain(node.overrides)} if node.overrides else {}),
                **({"description": node.description} if node.description else {}),
            }
            for n, node in sorted(inv.nodes.items())
        },
    }
    header = "# oneroot inventory — apply with `oneroot inventory apply FILE`\n"
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False,
                                   allow_unicode=True)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidValue(f"{where} must be a mapping", hint="see `oneroot inventory export`")
    return value


def _where(where: str, exc: InvalidValue) -> InvalidValue:
    return InvalidValue(f"{where}: {exc.message}", hint=exc.hint)


def from_yaml(text: str, *, source: str = "inventory file") -> Inventory:
    try:
        doc = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise InvalidValue(f"{source}: not valid YAML{at}",
                           hint="fix the syntax, or export a fresh file to compare") from None
    doc = _mapping(doc, source)
    unknown = set(doc) - {"settings", "runlevels", "images", "groups", "nodes"}
    if unknown:
        raise InvalidValue(f"{source}: unknown section {sorted(unknown)[0]!r}",
                           hint="sections: settings, runlevels, images, groups, nodes")
    try:
        settings = settings_from_dict(_mapping(doc.get("settings"), "settings"))
    except InvalidValue as exc:
        raise _where(f"{source}: settings", exc) from None

    runlevels = {}
    for name, body in _mapping(doc.get("runlevels"), f"{source}: runlevels").items():
        body = _mapping(body, f"{source}: runlevel {name}")
        services = body.get("services") or []
        if not isinstance(services, list):
            raise InvalidValue(f"{source}: runlevel {name}: services must be a list")
        runlevels[str(name)] = Runlevel(name=str(name), services=tuple(map(str, services)),
                                        description=str(body.get("description") or ""))
    images = {}
    for name, body in _mapping(doc.get("images"), f"{source}: images").items():
        body = _mapping(body, f"{source}: image {name}")
        try:
            images[str(name)] = Image(
                name=str(name), root=PurePosixPath(str(body.get("root", "/"))),
                init_system=check_init_system(str(body.get("init_system", "unknown"))),
                description=str(body.get("description") or ""),
                expose=_expose_paths(body.get("expose"), f"{source}: image {name}"),
                versions=_versions(body.get("versions"), f"{source}: image {name}"))
        except InvalidValue as exc:
            raise _where(f"{source}: image {name}", exc) from None
    groups = {}
    for name, body in _mapping(doc.get("groups"), f"{source}: groups").items():
        body = dict(_mapping(body, f"{source}: group {name}"))
        description = str(body.pop("description", "") or "")
        try:
            values = {k: check_profile_value(k, v) for k, v in body.items()}
        except InvalidValue as exc:
            raise _where(f"{source}: group {name}", exc) from None
        groups[str(name)] = Group(name=str(name), description=description, values=values)
    nodes = {}
    for name, body in _mapping(doc.get("nodes"), f"{source}: nodes").items():
        body = _mapping(body, f"{source}: node {name}")
        where = f"{source}: node {name}"
        try:
            macs_raw = body.get("mac") or []
            if isinstance(macs_raw, str):
                macs_raw = [macs_raw]
            grps = body.get("groups", ["default"])
            if isinstance(grps, str):
                grps = [grps]
            overrides = {k: check_profile_value(k, v)
                         for k, v in _mapping(body.get("set"), where).items()}
            nodes[str(name)] = Node(
                name=str(name), macs=tuple(MacAddress.parse(str(m)) for m in macs_raw),
                address=parse_ipv4(str(body.get("ip", "")), what="node address"),
                groups=tuple(map(str, grps)), overrides=overrides,
                description=str(body.get("description") or ""))
        except InvalidValue as exc:
            raise _where(where, exc) from None
    return Inventory(settings=settings, groups=groups, nodes=nodes, images=images,
                     runlevels=runlevels)


def _expose_paths(value: Any, where: str) -> tuple[PurePosixPath, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidValue(f"{where}: expose must be a list of absolute paths")
    return tuple(check_expose_path(v) for v in value)


def _versions(value: Any, where: str) -> tuple[ImageVersion, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidValue(f"{where}: versions must be a list")
    return tuple(version_from_json(v) for v in value)
