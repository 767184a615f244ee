"""The root of the command table: `oneroot [--home DIR] NOUN VERB …`, one module per noun.

Commands are thin: parse, call `oneroot.ops`, show the result. A noun's module is imported
when its command runs (so `oneroot node list` does not load the server, aiohttp or the
initramfs builder); `oneroot --help` and completion load them all."""

from __future__ import annotations

import importlib
from pathlib import Path

import click
from click.shell_completion import get_completion_class

from oneroot.cli.state import State
from oneroot.model.paths import DEFAULT_HOME, Paths

# command name -> the module under oneroot.cli defining it (as an attribute of that name)
NOUNS = {
    "init": "settings", "settings": "settings", "node": "node", "group": "group",
    "image": "image", "runlevel": "runlevel", "inventory": "inventory",
    "rootspec": "rootspec", "render": "render", "serve": "serve", "status": "status",
    "nfs": "nfs", "initramfs": "initramfs", "overlay": "overlay", "lab": "lab",
    "doctor": "doctor", "power": "power", "admin": "admin",
    "console": "console", "db": "db",
}
COMPLETE_VAR = "_ONEROOT_COMPLETE"


class NounGroup(click.Group):
    """A group whose commands come from `NOUNS`, imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *NOUNS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in NOUNS and cmd_name not in self.commands:
            module = importlib.import_module(f"oneroot.cli.{NOUNS[cmd_name]}")
            command = getattr(module, cmd_name)
            assert isinstance(command, click.Command)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=NounGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--home", type=click.Path(path_type=Path), default=DEFAULT_HOME,
              envvar="ONEROOT_HOME", show_default=True,
              help="Directory holding the inventory, leases and events.")
@click.version_option(package_name="oneroot")
@click.pass_context
def cli(ctx: click.Context, home: Path) -> None:
    """oneroot: one root filesystem for a whole diskless cluster."""
    ctx.obj = State(paths=Paths(home=home))


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script, e.g.
    `oneroot completion bash > /etc/bash_completion.d/oneroot`."""
    root = ctx.find_root().command
    cls = get_completion_class(shell)
    assert cls is not None  # the Choice above lists only shells click knows
    click.echo(cls(root, {}, "oneroot", COMPLETE_VAR).source())
