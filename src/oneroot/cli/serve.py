"""`oneroot serve`: DHCP, TFTP and HTTP for the cluster in one process, until SIGTERM."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import PurePosixPath

import click

from oneroot.cli.logformat import configure_logging
from oneroot.cli.state import State, pass_state
from oneroot.model.limits import limits_from_pairs
from oneroot.model.server import ServerRole
from oneroot.net import parse_ipv4
from oneroot.ops import inventory as inv_ops
from oneroot.ops.admin_token import admin_token
from oneroot.serve.admin import parse_listen
from oneroot.serve.app import ServeOptions
from oneroot.serve.app import serve as run_serve


@click.command()
@click.option("--no-dhcp", is_flag=True, help="Leave DHCP to another server.")
@click.option("--no-tftp", is_flag=True)
@click.option("--no-http", is_flag=True)
@click.option("--no-nfs", is_flag=True, help="Leave NFS exports alone (no ganesha).")
@click.option("--bind", default=None, help="Address for TFTP/HTTP [default: server address].")
@click.option("--tftp-port", default=69, show_default=True, type=int)
@click.option("--http-port", default=None, type=int, help="[default: settings.http_port]")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning"]))
@click.option("--lease-sync", default="normal", show_default=True,
              type=click.Choice(["normal", "full"]),
              help="normal: each lease is written to the OS before its ACK leaves (it survives "
                   "a crash of serve, as Kea's memfile does); full: also fsynced (it survives "
                   "a power loss; slower).")
@click.option("--limit", "limit_pairs", multiple=True, metavar="NAME=VALUE",
              help="Change one limit on network input (see docs/security.md).")
@click.option("--server-id", default=None, metavar="NAME",
              help="This server's name among several on one database (recorded with the "
                   "leases it binds and the boots it serves).")
@click.option("--interface", default=None, metavar="IFACE",
              help="Serve DHCP on this interface [default: settings.interface].")
@click.option("--server-address", default=None, metavar="IP",
              help="This server's address on the segment [default: settings.server_address].")
@click.option("--relay", "relays", multiple=True, metavar="GIADDR",
              help="Answer relayed requests from this relay only (repeat for more) "
                   "[default: every relay].")
@click.option("--boot-dir", default=None, metavar="DIR",
              help="This server's boot files [default: settings.boot_dir].")
@click.option("--peer", "peers", multiple=True, metavar="http://HOST:PORT",
              help="Another server to fetch missing boot files from (repeat for more).")
@click.option("--admin-listen", default=None, metavar="[HOST:]PORT",
              help="Serve the status page with power buttons here too, for whoever holds "
                   "the token of `oneroot admin token` [default: off; HOST: 127.0.0.1].")
@pass_state
def serve(state: State, no_dhcp: bool, no_tftp: bool, no_http: bool, no_nfs: bool,
          bind: str | None,
          tftp_port: int, http_port: int | None, log_level: str, lease_sync: str,
          limit_pairs: tuple[str, ...], admin_listen: str | None, server_id: str | None,
          interface: str | None, server_address: str | None, relays: tuple[str, ...],
          boot_dir: str | None, peers: tuple[str, ...]) -> None:
    """Run DHCP, TFTP and HTTP for the cluster until SIGTERM (SIGHUP reloads)."""
    configure_logging(log_level, sys.stderr)
    inv_ops.open_store(state.paths).close()  # a clear error before any socket opens
    options = ServeOptions(dhcp=not no_dhcp, tftp=not no_tftp, http=not no_http,
                           nfs=not no_nfs, bind=bind,
                           tftp_port=tftp_port, http_port=http_port,
                           lease_sync="FULL" if lease_sync == "full" else "NORMAL",
                           limits=limits_from_pairs(limit_pairs),
                           admin=parse_listen(admin_listen) if admin_listen else None,
                           role=server_role(server_id=server_id, interface=interface,
                                            address=server_address, relays=relays,
                                            boot_dir=boot_dir, peers=peers))
    if options.admin is not None:
        admin_token(state.paths)  # made (or found wrong) before any socket opens
    asyncio.run(run_serve(state.paths, options))


def server_role(*, server_id: str | None, interface: str | None, address: str | None,
                relays: tuple[str, ...], boot_dir: str | None,
                peers: tuple[str, ...]) -> ServerRole:
    return ServerRole(id=server_id, interface=interface,
                      address=None if address is None
                      else parse_ipv4(address, what="--server-address"),
                      relays=frozenset(parse_ipv4(r, what="--relay") for r in relays) or None,
                      boot_dir=None if boot_dir is None else PurePosixPath(
                          os.path.abspath(boot_dir)),
                      peers=tuple(p.rstrip("/") for p in peers))
