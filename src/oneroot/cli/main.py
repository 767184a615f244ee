"""`oneroot` entry point: the one place where errors become messages and exit codes."""

from __future__ import annotations

import os
import sys

import click

from oneroot.cli.app import cli
from oneroot.errors import OnerootError


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="oneroot", standalone_mode=False,
                 auto_envvar_prefix="ONEROOT")
    except OnerootError as exc:
        click.echo(f"error: {exc}", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head`: not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:  # the one broad except of the CLI: never a bare traceback
        click.echo(f"error: internal error: {type(exc).__name__}: {exc}", err=True)
        click.echo("hint: this is a bug in oneroot; rerun with ONEROOT_DEBUG=1 for details",
                   err=True)
        if os.environ.get("ONEROOT_DEBUG"):
            raise
        return 70
    return 0
