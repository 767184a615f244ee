"""`oneroot lab try NODE`: a canary VM boots NODE's exact configuration on the lab's network
(the work is `oneroot.ops.lab_try`); `image rollout` runs it first, on its canary's."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import click

from oneroot.cli.output import console, emit_json, plain, table, visible
from oneroot.cli.state import State, json_option, pass_state
from oneroot.errors import OnerootError
from oneroot.lab.canarynet import neighbours
from oneroot.model.paths import Paths
from oneroot.model.profile import parse_size
from oneroot.ops import inventory as inv_ops
from oneroot.ops import labctl
from oneroot.ops.lab_try import (
    DEFAULT_TIMEOUT,
    TryResult,
    canary_address,
    canary_network,
    lab_netns,
    plan_try,
    try_node,
)
from oneroot.overlay.snapshot import DEFAULT_COPY_LIMIT


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM ends the try as Ctrl-C does: through the clean-up, not around it."""
    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run_lab_try(paths: Paths, workdir: Path, node: str, *, image: str | None,
                sets: tuple[str, ...] = (), timeout: float = DEFAULT_TIMEOUT,
                snapshot_limit: int = DEFAULT_COPY_LIMIT, quiet: bool = False) -> TryResult:
    """Plan, boot and watch NODE's canary, printing each step (to stderr when `quiet`)."""
    started = time.monotonic()
    out = sys.stderr if quiet else sys.stdout

    def progress(message: str) -> None:  # holds what the canary sent: controls made visible
        print(f"[{time.monotonic() - started:5.0f} s] lab try: {visible(message)}", file=out,
              flush=True)

    store = inv_ops.open_store(paths)
    try:
        inv = store.load()
        network = canary_network(workdir, inv)
        seen = () if isinstance(network, str) else neighbours(network)
        plan = plan_try(inv, node, image=image, sets=inv_ops.parse_overrides(sets),
                        address=canary_address(inv, seen=seen))
        progress(f"{node}'s configuration on {plan.image}: kernel {plan.kernel.name}, "
                 f"initramfs {plan.initramfs.name}, runlevel {plan.runlevel}")
        with _sigterm_interrupts():
            return try_node(store, paths, plan, network=network, workdir=workdir,
                            timeout=timeout, snapshot_limit=snapshot_limit,
                            progress=progress)
    finally:
        store.close()


def show_checks(result: TryResult) -> None:
    """The declared checks and the canary's answers (its messages escaped by `table`)."""
    if result.checks:
        table(f"checks of {result.node} on {result.image}", ["check", "result", "message"],
              [(o.check.text, plain(o.verdict, style="green" if o.passed else "red"),
                o.result.message if o.result else "") for o in result.checks])


def try_failed(result: TryResult) -> OnerootError:
    return OnerootError(
        f"lab try of {result.node} on {result.image} failed at stage {result.stage}: "
        f"{result.reason}",
        hint=f"the canary's console is in {result.serial_log}; {result.node} itself was not "
             "touched")


@click.command("try")
@click.argument("node")
@click.option("--image", "image", default=None, metavar="NAME@N",
              help="The image version to boot [default: the one NODE boots next].")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Change a value of NODE's profile for the canary only.")
@click.option("--timeout", type=click.FloatRange(min=1), default=DEFAULT_TIMEOUT,
              show_default=True, help="Seconds the canary may take to reach its runlevel.")
@click.option("--snapshot-limit", default="1G", show_default=True, metavar="SIZE",
              help="A union=server NODE's upper is copied for the canary: the most it may "
                   "copy where the filesystem cannot reflink.")
@json_option
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False),
              default=labctl.DEFAULT_WORKDIR, show_default=True, envvar="ONEROOT_LAB_WORKDIR",
              help="The lab's directory (its home is WORKDIR/home).")
@pass_state
def lab_try(state: State, node: str, image: str | None, sets: tuple[str, ...],
            timeout: float, snapshot_limit: str, as_json: bool, workdir: Path) -> None:
    """Boot a canary VM with exactly NODE's kernel, initramfs, kernel arguments, runlevel and
    layers (NODE's own layer read-only under a throwaway tmpfs, through a temporary export to
    the canary's own address) and check it reaches NODE's runlevel, then that the checks
    NODE's groups declare pass (check_units, check_paths, check_commands). NODE is not
    touched. Exit 0: passed; 1: the canary did not reach its runlevel or a check failed
    (`--json`: `stage` is `checks` then, and `checks` has each result).

    A union=server NODE's upper is in use by the server's union: the canary reads a snapshot
    of it (a reflink copy where the filesystem has them, else a copy of at most
    --snapshot-limit), exported read-only to the canary's address, removed after.

    With no lab running from WORKDIR, the server's network is real: lab try then runs on the
    server (`--home`), and the canary boots in a private namespace that mirrors the
    segment, reaching only the server's services, never another host."""
    # A lab at WORKDIR: its own home; otherwise the server's (--home), on a real network.
    paths = Paths(home=workdir / "home") if lab_netns(workdir) else state.paths
    result = run_lab_try(paths, workdir, node, image=image, sets=sets, timeout=timeout,
                         snapshot_limit=parse_size(snapshot_limit), quiet=as_json)
    if as_json:
        emit_json(result.as_json())
    else:
        show_checks(result)
    if result.passed and not as_json:
        checks = f", {len(result.checks)} checks passed" if result.checks else ""
        console.print(plain(f"lab try {result.node} on {result.image}: passed, runlevel "
                            f"reached in {result.seconds:.0f} s{checks}", style="green"))
    if not result.passed:
        raise try_failed(result)
