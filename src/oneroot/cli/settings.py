"""`oneroot init` and `oneroot settings show|set`: the cluster-wide settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from oneroot.cli.output import console, emit_json, plain, show_changes, table
from oneroot.cli.state import State, json_option, pass_state
from oneroot.errors import UsageError
from oneroot.model.inventory import settings_to_dict
from oneroot.model.profile import parse_size
from oneroot.ops import inventory as inv_ops
from oneroot.ops.statefs import create_state_fs


@click.command()
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
@click.option("--nfs-server", type=click.Choice(["knfsd", "ganesha", "ganesha-ceph"]),
              default=None,
              help="NFS server [default: knfsd if the kernel has nfsd, else ganesha].")
@click.option("--force", is_flag=True, help="Overwrite the settings of an existing inventory.")
@click.option("--state-device", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Partition or LV to hold the state and group dirs (formatted if empty).")
@click.option("--state-image", "state_image", is_flag=True,
              help="Without a device: a loop-mounted image file in HOME holds them.")
@click.option("--state-image-size", default="16G", show_default=True,
              help="Size of that (sparse) image file.")
@click.option("--db", "db_url", metavar="URL", default=None,
              help="Keep inventory, leases and events in this PostgreSQL database "
                   "(postgresql://…) instead of SQLite files in HOME.")
@pass_state
def init(state: State, /, force: bool, state_device: Path | None, state_image: bool,
         state_image_size: str, db_url: str | None, **settings: Any) -> None:
    """Create the inventory with cluster settings, a `default` group and image; with
    --state-device or --state-image, the state filesystem (layers only, nosuid,nodev, quotas)."""
    show_changes(inv_ops.init_cluster(state.paths, settings, force=force, db_url=db_url))
    console.print(plain(f"inventory: {inv_ops.describe_location(state.paths)}"))
    if state_device is None and not state_image:
        console.print("note: the state dir is on the root filesystem; `oneroot init "
                      "--state-device DEV` (or --state-image) puts the layers on a filesystem "
                      "of their own (see `oneroot doctor`)")
        return
    fs = create_state_fs(state.load().settings, state.paths, device=state_device,
                         size=parse_size(state_image_size))
    console.print(plain(f"state filesystem: {fs.source} ({fs.fstype}) on {fs.mountpoint}, "
                        f"{fs.options}"))
    console.print("to mount it at boot, add to /etc/fstab (`oneroot serve` mounts it too):")
    console.print(plain(fs.fstab_line()))


@click.group()
def settings() -> None:
    """Show or change cluster settings."""


@settings.command("show")
@json_option
@pass_state
def settings_show(state: State, as_json: bool) -> None:
    data = settings_to_dict(state.load().settings)
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
