"""`oneroot console NODE`: the node's serial console in this terminal, over its BMC (IPMI SOL).

The terminal is put in raw mode only once the session is up, and restored however it ends."""

from __future__ import annotations

import contextlib
import sys
import termios
import tty
from collections.abc import Iterator

import click

from oneroot.cli.output import visible
from oneroot.cli.state import State, pass_state
from oneroot.ops import console as console_ops


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Keys go to the node as typed (Ctrl-C included); the settings come back on the way out."""
    if not sys.stdin.isatty():
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


def show_tail(state: State, node: str) -> None:
    path = console_ops.console_dir(state.paths.home) / f"{state.cluster().node(node).name}.log"
    text = console_ops.tail(path).decode("utf-8", "replace")
    for line in text.replace("\r\n", "\n").split("\n"):
        click.echo(visible(line))


@click.command()
@click.argument("node")
@click.option("--tail", "show_log", is_flag=True,
              help="Print the end of the node's console log instead (controls made visible).")
@pass_state
def console(state: State, node: str, show_log: bool) -> None:
    """Open NODE's serial console through its BMC (IPMI serial-over-LAN).

    Type ~. at the start of a line to leave. What the node writes is also appended to
    <home>/console/NODE.log (one older generation kept as NODE.log.1)."""
    if show_log:
        show_tail(state, node)
        return
    target = console_ops.target(state.cluster(), state.paths.home, node)
    keyboard, screen = sys.stdin.fileno(), sys.stdout.fileno()

    def connected() -> None:
        click.echo(f"[connected to {target.node} through BMC {target.creds.where}; "
                   f"{console_ops.ESCAPE_HELP}]", err=True)

    with contextlib.ExitStack() as stack:
        def enter_raw() -> None:
            connected()
            stack.enter_context(raw_terminal(keyboard))

        reason = console_ops.session(target, keyboard=keyboard, screen=screen,
                                     on_connected=enter_raw)
    click.echo(f"\n[console of {target.node} closed: {reason}]", err=True)
