"""The command table. Commands are thin: parse, call `oneroot.ops`, show the result."""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from oneroot.cli.output import console, emit_json, show_changes, table
from oneroot.errors import InvalidValue, UsageError
from oneroot.inventory.sqlite import SqliteInventory
from oneroot.model.cluster import PROFILE_KEYS, InitSystem, Node, ResolvedNode
from oneroot.model.inventory import settings_to_dict
from oneroot.net import MacAddress, parse_ipv4
from oneroot.ops import inventory as inv_ops
from oneroot.ops.paths import DEFAULT_HOME, Paths


@dataclass(slots=True)
class State:
    paths: Paths

    @contextmanager
    def store(self) -> Iterator[SqliteInventory]:
        store = inv_ops.open_store(self.paths)
        try:
            yield store
        finally:
            store.close()


pass_state = click.make_pass_decorator(State)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--home", type=click.Path(path_type=Path), default=DEFAULT_HOME,
              envvar="ONEROOT_HOME", show_default=True,
              help="Directory holding the inventory, leases and events.")
@click.version_option(package_name="oneroot")
@click.pass_context
def cli(ctx: click.Context, home: Path) -> None:
    """oneroot: one root filesystem for a whole diskless cluster."""
    ctx.obj = State(paths=Paths(home=home))


# -- init / settings --------------------------------------------------------------------------

@cli.command()
@click.option("--server", "server_address", default="10.0.0.1", show_default=True,
              help="The server's address on the cluster network.")
@click.option("--subnet", default="10.0.0.0/24", show_default=True)
@click.option("--interface", default="eth0", show_default=True,
              help="Interface DHCP serves on.")
@click.option("--gateway", default=None)
@click.option("--dns", default=None, help="DNS servers, comma separated.")
@click.option("--domain", default=None)
@click.option("--dhcp-mode", type=click.Choice(["full", "proxy"]), default="full",
              show_default=True)
@click.option("--image-root", default="/", show_default=True,
              help="Root of the default image (the seed exports the server's /).")
@click.option("--state-dir", default="/var/state/systems", show_default=True,
              help="Where each node's diff-overlay lives.")
@click.option("--boot-dir", default=None, help="Boot files dir [default: HOME/boot].")
@click.option("--http-port", default=8080, show_default=True, type=int)
@click.option("--nfs-server", type=click.Choice(["knfsd", "ganesha"]), default=None,
              help="NFS server [default: knfsd if the kernel has nfsd, else ganesha].")
@click.option("--force", is_flag=True, help="Overwrite the settings of an existing inventory.")
@pass_state
def init(state: State, /, force: bool, boot_dir: str | None, nfs_server: str | None,
         **settings: Any) -> None:
    """Create the inventory with cluster settings, a `default` group and image."""
    settings = {k: v for k, v in settings.items() if v is not None}
    settings["boot_dir"] = boot_dir or str(state.paths.home / "boot")
    settings["nfs_server"] = nfs_server or _default_nfs_server()
    changes = inv_ops.init_cluster(state.paths, settings, force=force)
    show_changes(changes)
    console.print(f"inventory: {state.paths.inventory_db}")


def _default_nfs_server() -> str:
    """knfsd where the kernel can serve NFS (the nfsd filesystem is registered), else ganesha."""
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        return "ganesha"
    return "knfsd" if any(line.split()[-1:] == ["nfsd"] for line in filesystems.splitlines()) \
        else "ganesha"


@cli.group()
def settings() -> None:
    """Show or change cluster settings."""


@settings.command("show")
@json_option
@pass_state
def settings_show(state: State, as_json: bool) -> None:
    with state.store() as store:
        data = settings_to_dict(store.load().settings)
    if as_json:
        emit_json(data)
    else:
        table(None, ["setting", "value"],
              [(k, ", ".join(v) if isinstance(v, list) else v) for k, v in data.items()])


@settings.command("set")
@click.argument("pairs", nargs=-1, required=True)
@pass_state
def settings_set(state: State, pairs: tuple[str, ...]) -> None:
    """Set KEY=VALUE pairs, e.g. `dhcp_mode=proxy discovery=true`."""
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"expected KEY=VALUE, got {pair!r}", hint="e.g. http_port=8080")
        values[key] = value
    with state.store() as store:
        show_changes(inv_ops.update_settings(store, values))


# -- nodes -----------------------------------------------------------------------------------

@cli.group()
def node() -> None:
    """Add, list, show, change and remove nodes."""


@node.command("add")
@click.argument("names", required=False)
@click.option("--mac", "macs", multiple=True, help="MAC address(es), in node order.")
@click.option("--macs-file", type=click.Path(path_type=Path, dir_okay=False),
              help="File with one MAC per line, in node order.")
@click.option("--ip", "start_ip", help="Address of the first node; the rest follow.")
@click.option("--group", "groups", multiple=True, help="Group(s), in merge order.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a value.")
@click.option("--ephemeral", is_flag=True, help="Throw changes away at reboot (tmpfs top).")
@click.option("--from-unknown", "from_unknown", metavar="MAC",
              help="Adopt a machine seen by DHCP discovery.")
@click.option("--description", default="")
@click.option("--dry-run", is_flag=True, help="Show what would change, change nothing.")
@pass_state
def node_add(state: State, names: str | None, macs: tuple[str, ...], macs_file: Path | None,
             start_ip: str | None, groups: tuple[str, ...], sets: tuple[str, ...],
             ephemeral: bool, from_unknown: str | None, description: str,
             dry_run: bool) -> None:
    """Add NAMES (a name or a range such as node[01-64])."""
    if not names:
        raise UsageError("name the node(s) to add", hint="e.g. oneroot node add node01 --mac …")
    mac_list = inv_ops.read_macs(macs, macs_file)
    if from_unknown:
        mac_list = [MacAddress.parse(from_unknown)]
        if start_ip is None:
            start_ip = _unknown_address(state, mac_list[0])
    overrides = inv_ops.parse_overrides(sets)
    if ephemeral:
        overrides["ephemeral"] = True
    ip = parse_ipv4(start_ip, what="start address") if start_ip else None
    with state.store() as store:
        changes = inv_ops.add_nodes(store, names=names, macs=mac_list, start_ip=ip,
                                    groups=groups, overrides=overrides,
                                    description=description, dry_run=dry_run)
    show_changes(changes, applied=not dry_run)
    if from_unknown and not dry_run:
        _forget_unknown(state, mac_list[0])


def _unknown_address(state: State, mac: MacAddress) -> str | None:
    from oneroot.ops import leases as lease_ops

    address: str | None = lease_ops.unknown_address(state.paths, mac)
    return address


def _forget_unknown(state: State, mac: MacAddress) -> None:
    from oneroot.ops import leases as lease_ops

    lease_ops.forget_unknown(state.paths, mac)


def _node_row(node: Node) -> dict[str, Any]:
    return {"name": node.name, "macs": [str(m) for m in node.macs], "ip": str(node.address),
            "groups": list(node.groups), "description": node.description}


@node.command("list")
@json_option
@pass_state
def node_list(state: State, as_json: bool) -> None:
    with state.store() as store:
        nodes = sorted(store.load().nodes.values(), key=lambda n: n.name)
    if as_json:
        emit_json([_node_row(n) for n in nodes])
        return
    table(None, ["node", "mac", "ip", "groups"],
          [(n.name, ", ".join(map(str, n.macs)), n.address, ", ".join(n.groups)) for n in nodes])


def _value_text(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(value) if value else "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if value != "" else "-"


def resolved_json(r: ResolvedNode) -> dict[str, Any]:
    return {
        **_node_row(r.node),
        "values": {k: {"value": list(v) if isinstance(v, tuple) else v,
                       "from": r.provenance[k]} for k, v in r.values.items()},
    }


@node.command("show")
@click.argument("name")
@json_option
@pass_state
def node_show(state: State, name: str, as_json: bool) -> None:
    """Show a node's values and where each came from."""
    from oneroot.ops import boot as boot_ops

    with state.store() as store:
        inv = store.load()
    n = inv_ops.get_node(inv, name)
    r = inv_ops.resolved(inv, n)
    spec = boot_ops.root_spec_text(inv, r)
    if as_json:
        emit_json({**resolved_json(r), "root": spec})
        return
    table(f"node {n.name}", ["", ""], [
        ("macs", ", ".join(map(str, n.macs))), ("ip", n.address),
        ("groups", ", ".join(n.groups)), ("root=", spec)])
    console.print()
    table(None, ["setting", "value", "from"],
          [(k, _value_text(v), r.provenance[k]) for k, v in r.values.items()])


@node.command("set")
@click.argument("pattern")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE")
@click.option("--unset", multiple=True, metavar="KEY", help="Drop an override.")
@click.option("--mac", "macs", multiple=True)
@click.option("--ip", default=None)
@click.option("--groups", default=None, help="Replace the group list (comma separated).")
@click.option("--description", default=None)
@pass_state
def node_set(state: State, pattern: str, sets: tuple[str, ...], unset: tuple[str, ...],
             macs: tuple[str, ...], ip: str | None, groups: str | None,
             description: str | None) -> None:
    """Change node(s) PATTERN (a name or a range)."""
    overrides = inv_ops.parse_overrides(sets)
    for key in unset:
        if key not in PROFILE_KEYS:
            raise InvalidValue(f"unknown setting {key!r}",
                               hint=f"known: {', '.join(sorted(PROFILE_KEYS))}")
    mac_list = inv_ops.read_macs(macs, None) if macs else None
    group_list = [g.strip() for g in groups.split(",") if g.strip()] if groups else None
    with state.store() as store:
        show_changes(inv_ops.set_node(
            store, pattern, overrides=overrides, unset=unset, macs=mac_list,
            address=parse_ipv4(ip) if ip else None, groups=group_list,
            description=description))


@node.command("rm")
@click.argument("pattern")
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@pass_state
@click.option("--keep-dir", is_flag=True, help="Leave the node's directory where it is.")
def node_rm(state: State, pattern: str, yes: bool, keep_dir: bool) -> None:
    """Remove node(s): the inventory entry, exports and boot files; the node's directory is
    archived under HOME/archive (never deleted silently)."""
    from oneroot.ops.overlays import archive_node_dir

    if not yes and sys.stdin.isatty():
        click.confirm(f"remove {pattern}?", abort=True)
    with state.store() as store:
        before = store.load()
        changes = inv_ops.remove_nodes(store, pattern)
        after = store.load()
    show_changes(changes)
    if keep_dir:
        return
    _reapply_nfs(state, after)
    for ch in changes:
        archive = archive_node_dir(before, state.paths, ch.name)
        if archive is not None:
            console.print(f"archived {ch.name}'s directory to {archive}")


def _reapply_nfs(state: State, inv: Any) -> None:
    """Drop removed nodes' exports before their directories move (no export of a gone dir).

    Only where NFS was set up already (its config exists): removing a node from an inventory
    that is only rendered must not start exporting anything."""
    from oneroot.model.cluster import NfsServerKind
    from oneroot.nfs.knfsd import EXPORTS_FILE
    from oneroot.ops.nfs_serving import apply_nfs, ganesha_files

    config = (ganesha_files(state.paths).conf
              if inv.settings.nfs_server is NfsServerKind.GANESHA else EXPORTS_FILE)
    if config.exists():
        apply_nfs(inv, state.paths)


@node.command("unknown")
@json_option
@pass_state
def node_unknown(state: State, as_json: bool) -> None:
    """Machines DHCP saw that are not in the inventory (discovery)."""
    from oneroot.ops import leases as lease_ops

    rows = lease_ops.unknown_clients(state.paths)
    if as_json:
        emit_json(rows)
        return
    table(None, ["mac", "address", "arch", "vendor class", "first seen", "last seen"],
          [(r["mac"], r.get("address"), r.get("arch"), r.get("vendor_class"),
            r.get("first_seen"), r.get("last_seen")) for r in rows])


# -- groups ----------------------------------------------------------------------------------

@cli.group()
def group() -> None:
    """Profiles shared by nodes: kernel, runlevel, layers, kernel args…"""


@group.command("add")
@click.argument("name")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE")
@click.option("--description", default="")
@pass_state
def group_add(state: State, name: str, sets: tuple[str, ...], description: str) -> None:
    with state.store() as store:
        show_changes(inv_ops.add_group(store, name, inv_ops.parse_overrides(sets), description))


@group.command("list")
@json_option
@pass_state
def group_list(state: State, as_json: bool) -> None:
    with state.store() as store:
        inv = store.load()
    rows = []
    for g in sorted(inv.groups.values(), key=lambda g: g.name):
        members = sum(1 for n in inv.nodes.values() if g.name in n.groups)
        rows.append({"name": g.name, "description": g.description, "nodes": members,
                     "values": {k: list(v) if isinstance(v, tuple) else v
                                for k, v in g.values.items()}})
    if as_json:
        emit_json(rows)
        return
    table(None, ["group", "nodes", "sets", "description"],
          [(r["name"], r["nodes"], _values_line(r["values"]), r["description"]) for r in rows])


def _values_line(values: Any) -> str:
    return " ".join(f"{k}={','.join(v) if isinstance(v, list) else _value_text(v)}"
                    for k, v in values.items())


@group.command("show")
@click.argument("name")
@json_option
@pass_state
def group_show(state: State, name: str, as_json: bool) -> None:
    with state.store() as store:
        inv = store.load()
    g = inv_ops.get_group(inv, name)
    members = sorted(n.name for n in inv.nodes.values() if name in n.groups)
    if as_json:
        emit_json({"name": g.name, "description": g.description, "nodes": members,
                   "values": {k: list(v) if isinstance(v, tuple) else v
                              for k, v in g.values.items()}})
        return
    table(f"group {g.name}", ["setting", "value"],
          [(k, _value_text(v)) for k, v in g.values.items()] or [("(nothing set)", "")])
    console.print(f"nodes: {', '.join(members) or '-'}")


@group.command("set")
@click.argument("name")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE")
@click.option("--unset", multiple=True, metavar="KEY")
@click.option("--description", default=None)
@pass_state
def group_set(state: State, name: str, sets: tuple[str, ...], unset: tuple[str, ...],
              description: str | None) -> None:
    with state.store() as store:
        show_changes(inv_ops.set_group(store, name, inv_ops.parse_overrides(sets), unset,
                                       description))


@group.command("rm")
@click.argument("name")
@pass_state
def group_rm(state: State, name: str) -> None:
    with state.store() as store:
        show_changes(inv_ops.remove_group(store, name))


# -- runlevels and images ----------------------------------------------------------------------

@cli.group()
def runlevel() -> None:
    """Named sets of services nodes boot into (systemd targets / OpenRC runlevels)."""


@runlevel.command("add")
@click.argument("name")
@click.option("--service", "services", multiple=True, help="A service it starts.")
@click.option("--description", default="")
@pass_state
def runlevel_add(state: State, name: str, services: tuple[str, ...], description: str) -> None:
    with state.store() as store:
        show_changes(inv_ops.put_runlevel(store, name, services, description, create=True))


@runlevel.command("list")
@json_option
@pass_state
def runlevel_list(state: State, as_json: bool) -> None:
    with state.store() as store:
        rls = sorted(store.load().runlevels.values(), key=lambda r: r.name)
    if as_json:
        emit_json([{"name": r.name, "services": list(r.services),
                    "description": r.description} for r in rls])
        return
    table(None, ["runlevel", "services", "description"],
          [(r.name, " ".join(r.services), r.description) for r in rls])


@runlevel.command("rm")
@click.argument("name")
@pass_state
def runlevel_rm(state: State, name: str) -> None:
    with state.store() as store:
        show_changes(inv_ops.remove_runlevel(store, name))


@cli.group()
def image() -> None:
    """Root filesystems nodes boot (the server's / or one made by oneroot)."""


@image.command("use")
@click.argument("root", type=click.Path(path_type=Path, file_okay=False))
@click.option("--name", default="default", show_default=True)
@click.option("--init-system", type=click.Choice(["systemd", "openrc"]), default=None,
              help="Override detection.")
@pass_state
def image_use(state: State, root: Path, name: str, init_system: str | None) -> None:
    """Use ROOT (e.g. `/`, the seed's way) as image NAME."""
    if init_system is not None:
        with state.store() as store:
            show_changes(inv_ops.put_image(store, name, root, InitSystem(init_system)))
        return
    from oneroot.ops.images import use_image

    with state.store() as store:
        result = use_image(store, root, name=name)
    console.print(f"image {result.name}: {result.root} ({result.init_system})")


@image.command("create")
@click.argument("name")
@click.option("--suite", default="bookworm", show_default=True)
@click.option("--init", "init_system", type=click.Choice(["systemd", "openrc"]),
              default="systemd", show_default=True)
@click.option("--kernel", "kernel_version", default=None,
              help="Node kernel whose modules go in the image [default: Debian's current].")
@click.option("--package", "packages", multiple=True, help="Extra Debian package(s).")
@click.option("--mirror", default=None, help="[default: the host's Debian mirror]")
@click.option("--lab-modules", is_flag=True,
              help="Only the modules a lab node needs (small), not the whole tree.")
@pass_state
def image_create(state: State, name: str, suite: str, init_system: str,
                 kernel_version: str | None, packages: tuple[str, ...], mirror: str | None,
                 lab_modules: bool) -> None:
    """Build a Debian image with mmdebstrap (cached: a second run takes seconds)."""
    from oneroot.initramfs.kernel import fetch_kernel
    from oneroot.ops.images import LAB_MODULES, create_image

    cache = state.paths.cache_dir
    with console.status("fetching the node kernel…"):
        kernel = fetch_kernel(kernel_version, cache_dir=cache)
    with state.store() as store, console.status(f"building image {name}…") as status:
        result = create_image(
            store, name, dest_dir=state.paths.home / "images", cache_dir=cache, suite=suite,
            init=init_system, kernel_modules_dir=kernel.modules_dir,
            modules=LAB_MODULES if lab_modules else None, packages=packages, mirror=mirror,
            progress=lambda msg: status.update(msg))
    console.print(f"image {result.name}: {result.root} ({result.init_system}, "
                  f"{'from cache' if result.cached else 'built'} in {result.seconds:.1f} s)")


@image.command("list")
@json_option
@pass_state
def image_list(state: State, as_json: bool) -> None:
    with state.store() as store:
        images = sorted(store.load().images.values(), key=lambda i: i.name)
    if as_json:
        emit_json([{"name": i.name, "root": str(i.root), "init_system": str(i.init_system),
                    "description": i.description} for i in images])
        return
    table(None, ["image", "root", "init", "description"],
          [(i.name, i.root, i.init_system, i.description) for i in images])


# -- inventory as a file -----------------------------------------------------------------------

@cli.group()
def inventory() -> None:
    """The whole inventory as declarative YAML, for git."""


@inventory.command("export")
@click.option("--out", "-o", type=click.Path(path_type=Path, dir_okay=False), default=None)
@pass_state
def inventory_export(state: State, out: Path | None) -> None:
    from oneroot.inventory.yamlform import to_yaml
    from oneroot.ops.files import write_atomic

    with state.store() as store:
        text = to_yaml(store.load())
    if out is None:
        sys.stdout.write(text)
    else:
        write_atomic(out, text.encode())
        console.print(f"wrote {out}")


@inventory.command("apply")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True))
@click.option("--dry-run", is_flag=True, help="Show the plan only.")
@pass_state
def inventory_apply(state: State, file: Path, dry_run: bool) -> None:
    """Make the inventory equal FILE: shows the plan, then applies it."""
    from oneroot.inventory.yamlform import from_yaml

    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror}") from None
    new = from_yaml(text, source=str(file))
    with state.store() as store:
        changes = inv_ops.commit(store, new, dry_run=dry_run)
    show_changes(changes, applied=not dry_run)


# -- ip helpers for tests --------------------------------------------------------------------

def _ip(text: str) -> ipaddress.IPv4Address:
    return parse_ipv4(text)


# -- root= specs -----------------------------------------------------------------------------

@cli.group()
def rootspec() -> None:
    """The `root=` layer grammar."""


@rootspec.command("check")
@click.argument("spec")
@json_option
def rootspec_check(spec: str, as_json: bool) -> None:
    """Parse SPEC and print its layers, top to bottom (or the error, with a caret)."""
    from oneroot.rootspec import describe, format_spec, parse

    parsed = parse(spec)
    rows = describe(parsed)
    if as_json:
        emit_json({"canonical": format_spec(parsed),
                   "layers": [{"position": r.position, "kind": r.kind, "source": r.text,
                               "mode": str(r.mode), "options": list(r.options), "note": r.note}
                              for r in rows]})
        return
    table(None, ["layer", "source", "mode", "options", "note"],
          [(r.position, r.text, r.mode, ",".join(r.options) or "-", r.note) for r in rows])
    console.print(f"canonical: {format_spec(parsed)}")


# -- rendering -------------------------------------------------------------------------------

@cli.command()
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Boot tree directory [default: the boot dir from settings].")
@click.option("--config-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where exports/ganesha.conf/dnsmasq.conf go [default: OUT/config or "
                   "HOME/config].")
@json_option
@pass_state
def render(state: State, out: Path | None, config_dir: Path | None, as_json: bool) -> None:
    """Write per-node boot files and NFS/DHCP configs (only files whose content changed)."""
    from oneroot.ops.exportids import catalog_for
    from oneroot.ops.rendertree import render_tree

    with state.store() as store:
        inv = store.load()
    boot_out = out or Path(str(inv.settings.boot_dir))
    config_out = config_dir or (out / "config" if out else state.paths.home / "config")
    from rich.progress import Progress

    with Progress(console=console, transient=True, disable=as_json) as bar:
        task = bar.add_task("rendering boot files", total=len(inv.nodes) or None)
        report = render_tree(catalog_for(state.paths, inv), boot_out, config_out,
                             progress=lambda done, total: bar.update(task, completed=done,
                                                                     total=total))
    if as_json:
        emit_json({"written": report.written, "unchanged": report.unchanged,
                   "removed": report.removed, "boot_dir": str(boot_out),
                   "config_dir": str(config_out)})
        return
    for path in report.written:
        console.print(f"wrote {path}")
    for path in report.removed:
        console.print(f"removed {path}")
    console.print(f"{len(report.written)} written, {report.unchanged} unchanged, "
                  f"{len(report.removed)} removed: boot tree {boot_out}, configs {config_out}")


# -- serving and status ----------------------------------------------------------------------

@cli.command()
@click.option("--no-dhcp", is_flag=True, help="Leave DHCP to another server.")
@click.option("--no-tftp", is_flag=True)
@click.option("--no-http", is_flag=True)
@click.option("--no-nfs", is_flag=True, help="Leave NFS exports alone (no ganesha).")
@click.option("--bind", default=None, help="Address for TFTP/HTTP [default: server address].")
@click.option("--tftp-port", default=69, show_default=True, type=int)
@click.option("--http-port", default=None, type=int, help="[default: settings.http_port]")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning"]))
@pass_state
def serve(state: State, no_dhcp: bool, no_tftp: bool, no_http: bool, no_nfs: bool,
          bind: str | None,
          tftp_port: int, http_port: int | None, log_level: str) -> None:
    """Run DHCP, TFTP and HTTP for the cluster until SIGTERM (SIGHUP reloads)."""
    import asyncio
    import logging

    from oneroot.serve.app import ServeOptions
    from oneroot.serve.app import serve as run_serve

    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    inv_ops.open_store(state.paths).close()  # a clear error before any socket opens
    options = ServeOptions(dhcp=not no_dhcp, tftp=not no_tftp, http=not no_http,
                           nfs=not no_nfs, bind=bind,
                           tftp_port=tftp_port, http_port=http_port)
    asyncio.run(run_serve(state.paths, options))


def _status_rows(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
    import datetime

    rows = []
    for n in doc["nodes"]:
        when = (datetime.datetime.fromtimestamp(n["time"]).strftime("%H:%M:%S")
                if n["time"] else "-")
        detail = n["detail"].get("message") or n["detail"].get("status") or ""
        rows.append((n["node"], n["ip"], n["stage"], when, detail))
    return rows


@cli.command()
@json_option
@click.option("--watch", is_flag=True, help="Keep a live table until Ctrl-C.")
@click.option("--interval", default=1.0, show_default=True)
@pass_state
def status(state: State, as_json: bool, watch: bool, interval: float) -> None:
    """Each node's last boot stage and when it reached it."""
    import time as _time

    from rich.live import Live
    from rich.table import Table

    from oneroot.ops.status import read_status

    def document() -> dict[str, Any]:
        with state.store() as store:
            return read_status(state.paths, store.load())

    if as_json and not watch:
        emit_json(document())
        return
    if not watch:
        table(None, ["node", "ip", "stage", "since", "detail"], _status_rows(document()))
        return

    def render() -> Table:
        t = Table(box=None, header_style="bold", title="oneroot status (Ctrl-C to stop)",
                  title_justify="left")
        for col in ("node", "ip", "stage", "since", "detail"):
            t.add_column(col)
        for row in _status_rows(document()):
            t.add_row(*row)
        return t

    if as_json:
        try:
            while True:
                emit_json(document())
                sys.stdout.flush()
                _time.sleep(interval)
        except KeyboardInterrupt:
            return
    with Live(render(), console=console, refresh_per_second=4) as live:
        try:
            while True:
                _time.sleep(interval)
                live.update(render())
        except KeyboardInterrupt:
            return


# -- NFS -------------------------------------------------------------------------------------

@cli.group()
def nfs() -> None:
    """The NFS exports: image roots read-only, each node's layer to that node alone."""


@nfs.command("apply")
@pass_state
def nfs_apply(state: State) -> None:
    """Create layer dirs and node identities, mount views, write and apply the exports."""
    from oneroot.ops.nfs_serving import apply_nfs

    with state.store() as store:
        inv = store.load()
    with console.status("preparing node layers and exports…"):
        result = apply_nfs(inv, state.paths)
    console.print(f"{result.plan.kind}: {result.config_path} "
                  f"({'changed' if result.changed else 'unchanged'}, {result.applied})")


@nfs.command("status")
@json_option
@pass_state
def nfs_status_cmd(state: State, as_json: bool) -> None:
    from oneroot.ops.nfs_serving import nfs_status

    with state.store() as store:
        doc = nfs_status(store.load(), state.paths)
    if as_json:
        emit_json(doc)
        return
    console.print(f"server: {doc['server']}  ganesha pid: {doc['ganesha_pid'] or '-'}  "
                  f"config: {doc['config']}")
    exports = doc["exports"]
    assert isinstance(exports, list)
    table(None, ["export", "access", "clients"],
          [(e["path"], e["access"], ", ".join(e["clients"])) for e in exports])


# -- initramfs -------------------------------------------------------------------------------

@cli.group()
def initramfs() -> None:
    """oneroot's own initramfs: assembles the node's root from the layers in root=."""


@initramfs.command("build")
@click.option("--kernel", "kernel", default=None, metavar="VERSION|DIR",
              help="A Debian kernel version (fetched with apt-get download) or an unpacked "
                   "kernel tree [default: Debian's current linux-image-amd64].")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="[default: BOOT_DIR/initramfs.img]")
@click.option("--compression", type=click.Choice(["gzip", "zstd"]), default="gzip",
              show_default=True)
@click.option("--nic", "nics", multiple=True, help="Extra NIC driver module(s), e.g. igb.")
@click.option("--install-kernel/--no-install-kernel", default=True, show_default=True,
              help="Copy the kernel to BOOT_DIR/vmlinuz too.")
@json_option
@pass_state
def initramfs_build(state: State, kernel: str | None, out: Path | None, compression: str,
                    nics: tuple[str, ...], install_kernel: bool, as_json: bool) -> None:
    """Build the initramfs (reproducible: the same inputs give the same bytes)."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    from oneroot.initramfs.builder import build_initramfs
    from oneroot.initramfs.busybox import fetch_busybox
    from oneroot.initramfs.cpio import Compression
    from oneroot.initramfs.kernel import Kernel, fetch_kernel
    from oneroot.ops.files import write_if_changed

    cache = state.paths.cache_dir
    with state.store() as store:
        boot_dir = Path(str(store.load().settings.boot_dir))
    target = out or boot_dir / "initramfs.img"
    with console.status("fetching the kernel and busybox…"):
        if kernel and Path(kernel).is_dir():
            node_kernel = Kernel.from_tree(Path(kernel))
        else:
            node_kernel = fetch_kernel(kernel, cache_dir=cache)
        busybox = fetch_busybox(cache_dir=cache)
    with Progress(TextColumn("{task.description:<28}"), BarColumn(), TaskProgressColumn(),
                  console=console, transient=True, disable=as_json) as bar:
        task = bar.add_task("initramfs", total=None)
        report = build_initramfs(
            kernel=node_kernel, busybox=busybox, out=target,
            compression=Compression(compression),
            extra_nics=nics,
            progress=lambda step, done, total: bar.update(task, description=step,
                                                          completed=done, total=total))
    kernel_copy = None
    if install_kernel:
        kernel_copy = target.parent / "vmlinuz"
        write_if_changed(kernel_copy, node_kernel.vmlinuz.read_bytes())
    if as_json:
        emit_json({"path": str(report.path), "size": report.size, "sha256": report.sha256,
                   "files": report.files, "kernel": report.kernel_version,
                   "modules": list(report.modules), "kernel_copy": str(kernel_copy or "")})
        return
    table(f"initramfs {report.path} (kernel {report.kernel_version})",
          ["part", "files", "bytes"],
          [(p.name, p.files, f"{p.size:,}") for p in report.parts])
    console.print(f"{report.size:,} bytes compressed ({report.compression.value}), "
                  f"{report.files} entries, {len(report.modules)} kernel modules, "
                  f"sha256 {report.sha256[:16]}…")
    if kernel_copy:
        console.print(f"kernel: {kernel_copy}")


from oneroot.cli.overlay_cmds import register as _register_overlay  # noqa: E402

_register_overlay(cli)
from oneroot.cli.lab_cmds import register as _register_lab  # noqa: E402
from oneroot.cli.ops_cmds import register as _register_ops  # noqa: E402

_register_lab(cli)
_register_ops(cli)
from oneroot.cli.extra_cmds import register as _register_extra  # noqa: E402

_register_extra(cli)
