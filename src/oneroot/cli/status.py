"""`oneroot status`: each node's last boot stage, once or as a live table."""

from __future__ import annotations

import datetime
import sys
import time
from typing import Any

import click
from rich.live import Live
from rich.table import Table

from oneroot.cli.output import console, emit_json, err_console, plain, table
from oneroot.cli.state import State, json_option, pass_state
from oneroot.ops.health import health_warnings
from oneroot.ops.status import StatusReport, read_status

COLUMNS = ("node", "ip", "stage", "since", "image", "detail")


def _columns(report: StatusReport) -> list[str]:
    """The server column appears once a server with an id (`serve --server-id`) saw a node:
    with several servers on one database, which one booted it."""
    if any(n.server for n in report.nodes):
        return [*COLUMNS[:4], "server", *COLUMNS[4:]]
    return list(COLUMNS)


def _status_rows(report: StatusReport) -> list[tuple[Any, ...]]:
    rows = []
    with_server = "server" in _columns(report)
    for n in report.nodes:
        when = (datetime.datetime.fromtimestamp(n.time).strftime("%H:%M:%S")
                if n.time else "-")
        server = (n.server or "-",) if with_server else ()
        rows.append((n.node, str(n.ip), n.stage, when, *server, n.image_text, n.detail_text))
    return rows


def _live_table(doc: StatusReport) -> Table:
    t = Table(box=None, header_style="bold", title="oneroot status (Ctrl-C to stop)",
              title_justify="left")
    for col in _columns(doc):
        t.add_column(col)
    for row in _status_rows(doc):
        t.add_row(*(plain(v) for v in row))
    return t


@click.command()
@json_option
@click.option("--watch", is_flag=True, help="Keep a live table until Ctrl-C.")
@click.option("--interval", default=1.0, show_default=True)
@pass_state
def status(state: State, as_json: bool, watch: bool, interval: float) -> None:
    """Each node's last boot stage and when it reached it."""

    def document() -> StatusReport:
        return read_status(state.paths, state.cluster())

    if as_json and not watch:
        emit_json(document().as_json())
        return
    if not watch:
        doc = document()
        table(None, _columns(doc), _status_rows(doc))
        for warning in health_warnings(dict(doc.server)):
            err_console.print(plain(f"warning: {warning}", style="bold red"))
        return
    if as_json:
        try:
            while True:
                emit_json(document().as_json())
                sys.stdout.flush()
                time.sleep(interval)
        except KeyboardInterrupt:
            return
    with Live(_live_table(document()), console=console, refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(_live_table(document()))
        except KeyboardInterrupt:
            return
