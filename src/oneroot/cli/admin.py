"""`oneroot admin token`: the token of the administrator's web listener."""

from __future__ import annotations

import click

from oneroot.cli.state import State, pass_state
from oneroot.ops.admin_token import admin_token, token_path


@click.group()
def admin() -> None:
    """The administrator's web page (`oneroot serve --admin-listen`)."""


@admin.command()
@click.option("--url", "listen", default=None, metavar="HOST:PORT",
              help="Print the login URL for the admin listener at HOST:PORT instead.")
@pass_state
def token(state: State, listen: str | None) -> None:
    """Print the token (made on first use, in oneroot's home, mode 0600)."""
    value = admin_token(state.paths)
    if listen is None:
        click.echo(value)
        click.echo(f"(from {token_path(state.paths)}; open "
                   f"http://HOST:PORT/login?token=… on the --admin-listen address)", err=True)
    else:
        click.echo(f"http://{listen}/login?token={value}")
