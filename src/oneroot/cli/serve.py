"""`oneroot serve`: DHCP, TFTP and HTTP for the cluster in one process, until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from oneroot.cli.state import State, pass_state
from oneroot.model.limits import limits_from_pairs
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
@click.option("--admin-listen", default=None, metavar="[HOST:]PORT",
              help="Serve the status page with power buttons here too, for whoever holds "
                   "the token of `oneroot admin token` [default: off; HOST: 127.0.0.1].")
@pass_state
def serve(state: State, no_dhcp: bool, no_tftp: bool, no_http: bool, no_nfs: bool,
          bind: str | None,
          tftp_port: int, http_port: int | None, log_level: str, lease_sync: str,
          limit_pairs: tuple[str, ...], admin_listen: str | None) -> None:
    """Run DHCP, TFTP and HTTP for the cluster until SIGTERM (SIGHUP reloads)."""
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    # The format names no caller, thread or process: skip collecting them for every record
    # (the logging HOWTO's "Optimization"; serve logs a line per DHCP reply at info).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    inv_ops.open_store(state.paths).close()  # a clear error before any socket opens
    options = ServeOptions(dhcp=not no_dhcp, tftp=not no_tftp, http=not no_http,
                           nfs=not no_nfs, bind=bind,
                           tftp_port=tftp_port, http_port=http_port,
                           lease_sync="FULL" if lease_sync == "full" else "NORMAL",
                           limits=limits_from_pairs(limit_pairs),
                           admin=parse_listen(admin_listen) if admin_listen else None)
    if options.admin is not None:
        admin_token(state.paths)  # made (or found wrong) before any socket opens
    asyncio.run(run_serve(state.paths, options))
