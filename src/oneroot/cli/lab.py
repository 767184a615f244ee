"""`oneroot lab …`: a virtual cluster on this machine (namespace, `oneroot serve`, NFS, QEMU
nodes netbooting), which outlives the command that brings it up.

The work is in `oneroot.ops.labctl`; the process that keeps the lab is `cli/labsupervisor.py`.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from pathlib import Path
from typing import cast

import click
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from oneroot.cli.lab_try import lab_try
from oneroot.cli.labsupervisor import spawn_supervisor
from oneroot.cli.output import console, emit_json, plain, table
from oneroot.cli.state import json_option
from oneroot.errors import LabError
from oneroot.lab.qemu import Firmware
from oneroot.ops import labbmc, labctl, labharun
from oneroot.ops.labcontrol import LabPhase, is_alive
from oneroot.ops.labstatus import LabStatus, serial_log
from oneroot.ops.labstatus import lab_status as read_lab_status

workdir_option = click.option(
    "--workdir", type=click.Path(path_type=Path, file_okay=False),
    default=labctl.DEFAULT_WORKDIR, show_default=True, envvar="ONEROOT_LAB_WORKDIR",
    help="Where the lab keeps its inventory, image, state, logs and control file.")
STAGE_STYLE = {"runlevel": "green", "init": "green", "failed": "red", "never booted": "dim",
               "off": "dim"}


def _when(ts: float | None) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%H:%M:%S") if ts else "-"


def _nodes_table(doc: LabStatus, *, title: str | None = None) -> Table:
    t = Table(box=None, header_style="bold", title=title, title_justify="left")
    for col in ("node", "firmware", "top", "vm", "stage", "since", "runlevel / detail"):
        t.add_column(col)
    for n in doc.nodes:
        style = STAGE_STYLE.get(n.stage, "yellow")
        t.add_row(plain(n.node), plain(n.firmware), plain(n.top), plain(n.vm),
                  plain(n.stage, style=style), _when(n.time),
                  plain(n.runlevel or n.message or ""))
    return t


def _header(doc: LabStatus, started: float) -> Text:
    elapsed = time.monotonic() - started
    line = f"lab {doc.phase}"
    if doc.message:
        line += f": {doc.message}"
    return plain(f"{line}   ({elapsed:.0f} s)", style="bold")


@click.group()
def lab() -> None:
    """A virtual cluster on this machine: try oneroot, or test a change before hardware.

    `oneroot lab up` builds everything it needs (a Debian image, the kernel, the
    initramfs; cached after the first run) and boots N QEMU nodes from `oneroot serve`
    in a network namespace. The lab keeps running after the command returns.
    """


@lab.command("up")
@click.option("--nodes", default=2, show_default=True, type=click.IntRange(1, 20))
@click.option("--firmware", type=click.Choice(["bios", "uefi"]), default="bios",
              show_default=True, help="Boot the nodes with SeaBIOS or OVMF (UEFI).")
@click.option("--timeout", default=1800.0, show_default=True,
              help="Seconds to wait for every node to reach its runlevel.")
@click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Downloads and built images [default: WORKDIR/cache].")
@click.option("--server", type=click.Choice(["namespace", "vm"]), default="namespace",
              show_default=True,
              help="`vm`: the server is a Debian VM with kernel nfsd whose own / is the image "
                   "(the seed's setup; slower).")
@click.option("--servers", default=1, show_default=True, type=click.IntRange(1, 2),
              help="2: boot servers A and B on one PostgreSQL, with service addresses "
                   "that move (keepalived); needs --storage ceph.")
@click.option("--storage", type=click.Choice(labctl.STORAGE_KINDS), default="local",
              show_default=True,
              help="ceph: the nodes' image and layers in CephFS (one throwaway Ceph), "
                   "exported by a ganesha-ceph instance per service address.")
@workdir_option
def lab_up(nodes: int, firmware: str, timeout: float, cache_dir: Path | None, server: str,
           servers: int, storage: str, workdir: Path) -> None:
    """Bring up the lab, show the nodes boot, and print each node's runlevel.

    With `--servers 2 --storage ceph`: two boot servers (namespaces) on one PostgreSQL and
    one Ceph; the nodes (a busybox image that writes a numbered line every 0.1 s into its
    layer) boot from server A's service address, which moves to B if A dies
    (docs/scaling.md, "The two-server lab")."""
    started = time.monotonic()
    pid = spawn_supervisor(workdir, nodes=nodes, firmware=cast(Firmware, firmware),
                           cache_dir=cache_dir, server=server, servers=servers,
                           storage=storage)
    console.print(f"lab supervisor PID {pid}; log {workdir / labctl.SUPERVISOR_LOG}")
    doc = read_lab_status(workdir)

    def view() -> Group:
        return Group(_header(doc, started), _nodes_table(doc))

    deadline = started + timeout
    said = ""
    with Live(view(), console=console, refresh_per_second=4,
              transient=not console.is_terminal) as live:
        while True:
            doc = read_lab_status(workdir)
            live.update(view())
            if servers > 1 and not console.is_terminal and doc.message != said:
                said = doc.message  # the long steps, one line each, in a log too
                console.print(plain(f"lab {doc.phase}: {said}"))
            if doc.phase in (LabPhase.FAILED, LabPhase.CRASHED) or (
                    doc.phase == LabPhase.DOWN and not is_alive(pid, None)):
                break
            if doc.finished or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    console.print(_nodes_table(doc))
    if doc.phase != LabPhase.UP:
        tail = _tail(workdir / labctl.SUPERVISOR_LOG, 25)
        raise LabError(f"the lab did not come up ({doc.phase}): {doc.error or doc.message}",
                       hint=f"last lines of {workdir / labctl.SUPERVISOR_LOG}:\n{tail}")
    if not doc.finished:
        raise LabError(f"not every node reached its runlevel within {timeout:g} s",
                       hint="the lab still runs: `oneroot lab status`, "
                            "`oneroot lab console NODE`; `oneroot lab down` stops it")
    if doc.servers:
        _print_ha_up(doc, workdir, started)
        return
    console.print()
    for n in doc.nodes:
        if n.hello:
            console.print(plain(n.hello_file, style="bold"),
                          plain(f"(written on {n.node}, read on the server):"))
            console.print(Text("  ") + plain(n.hello))
    console.print()
    for n in doc.nodes:
        console.print(plain(f"{n.node}: {n.runlevel}"))
    console.print(f"\nlab up in {time.monotonic() - started:.0f} s. Next: "
                  "`oneroot lab status`, `oneroot lab console node01`, "
                  f"`oneroot --home {workdir / 'home'} status --watch`, "
                  "`oneroot lab down`.")


def _print_ha_up(doc: LabStatus, workdir: Path, started: float) -> None:
    """The two-server lab is up: its servers, what the nodes do, what to try."""
    console.print()
    for line in doc.servers:
        console.print(plain(f"server {line}"))
    console.print(plain(doc.message))
    home = labharun.ha_dir(workdir) / "home-a"
    console.print(f"\nlab up in {time.monotonic() - started:.0f} s. Each node writes a "
                  "numbered line every 0.1 s into its layer in CephFS, root on server a's "
                  "service address. Next: `oneroot lab status` (who holds each address, "
                  f"lines so far), `oneroot --home {home} status`, `oneroot lab console "
                  "node01 --log`; kill server a to watch b take over (docs/scaling.md); "
                  "`oneroot lab down`.")


@lab.command("status")
@json_option
@workdir_option
def lab_status(as_json: bool, workdir: Path) -> None:
    """Whether the lab runs, and each node's VM, boot stage and runlevel."""
    doc = read_lab_status(workdir)
    if as_json:
        emit_json(doc.as_json())
        return
    if doc.phase == LabPhase.DOWN:
        console.print(f"no lab runs from {workdir}")
        return
    console.print(f"lab {doc.phase} (supervisor PID {doc.supervisor_pid}, "
                  f"namespace {doc.netns or '-'}): {doc.message}")
    for line in doc.servers:
        console.print(plain(f"server {line}"))
    if doc.error:
        console.print(plain(doc.error, style="red"))
    console.print(_nodes_table(doc))
    hellos = [(n.node, n.hello) for n in doc.nodes if n.hello]
    if hellos:
        table(None, ["node", "hello file on the server"], hellos)


@lab.command("console")
@click.argument("node")
@click.option("--log", "log_only", is_flag=True,
              help="Show the console's log instead of logging in (implied by --no-follow, "
                   "and for nodes without a BMC).")
@click.option("--follow/--no-follow", "-f", default=True, show_default=True,
              help="With --log: keep printing as the console writes (Ctrl-C to stop).")
@click.option("--lines", "-n", default=40, show_default=True)
@workdir_option
def lab_console(node: str, log_only: bool, follow: bool, lines: int, workdir: Path) -> None:
    """NODE's serial console, interactive through its BMC (serial-over-LAN, `~.` leaves):
    `oneroot console NODE` run on the lab's server. Log in as root with the password in
    WORKDIR/bmc/console-password."""
    if not log_only and follow and labbmc.has_bmc(workdir, node):
        _exec_on_server(workdir, ("console", node))
    path = serial_log(workdir, node)
    _follow(path, lines=lines, follow=follow)


@lab.command("run", context_settings={"ignore_unknown_options": True,
                                      "allow_interspersed_args": False})
@click.argument("args", nargs=-1, required=True, type=click.UNPROCESSED)
@workdir_option
def lab_run(args: tuple[str, ...], workdir: Path) -> None:
    """Run `oneroot ARGS` on the lab's server (its namespace, its home), where the nodes'
    BMCs are reached: `oneroot lab run power off node01`, `… run console node01`."""
    _exec_on_server(workdir, args)


def _exec_on_server(workdir: Path, args: tuple[str, ...]) -> None:
    status = read_lab_status(workdir)
    command = labbmc.server_command(workdir, status.netns if status.running else None, args)
    sys.stdout.flush()
    os.execvp(command[0], command)


@lab.command("down")
@workdir_option
def lab_down(workdir: Path) -> None:
    """Stop the lab: nodes, server, namespace (also what a crashed run left)."""
    done = labctl.stop_lab(workdir)
    for line in done:
        console.print(line)
    console.print("lab down" if done else f"no lab ran from {workdir}; nothing to do")


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _follow(path: Path, *, lines: int, follow: bool) -> None:
    out = sys.stdout
    text = path.read_bytes() if path.exists() else b""
    out.write("\n".join(text.decode(errors="replace").splitlines()[-lines:]) + "\n")
    out.flush()
    if not follow:
        return
    position = len(text)
    try:
        while True:
            try:
                with path.open("rb") as f:
                    f.seek(0, 2)
                    if f.tell() < position:  # the VM was restarted: a new log
                        position = 0
                    f.seek(position)
                    chunk = f.read()
            except FileNotFoundError:
                chunk = b""
            if chunk:
                position += len(chunk)
                out.write(chunk.decode(errors="replace"))
                out.flush()
            time.sleep(0.2)
    except KeyboardInterrupt:
        return


lab.add_command(lab_try)
