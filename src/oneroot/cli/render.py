"""`oneroot render`: per-node boot files and the NFS/DHCP configs, written where changed."""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.progress import Progress

from oneroot.cli.output import console, emit_json
from oneroot.cli.state import State, json_option, pass_state
from oneroot.ops.exportids import catalog_for
from oneroot.ops.nfs_serving import rendered_configs
from oneroot.ops.rendertree import render_tree
from oneroot.ops.views import refresh_views


@click.command()
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Boot tree directory [default: the boot dir from settings].")
@click.option("--config-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where exports/ganesha.conf/dnsmasq.conf go [default: OUT/config or "
                   "HOME/config].")
@json_option
@pass_state
def render(state: State, out: Path | None, config_dir: Path | None, as_json: bool) -> None:
    """Write per-node boot files and NFS/DHCP configs (only files whose content changed)."""
    cluster = state.cluster()
    catalog = catalog_for(state.paths, cluster)  # new export ids saved before the plans
    plans = rendered_configs(cluster, state.paths)
    if os.geteuid() == 0:  # a live root goes out as its masked view: masks recomputed now
        refresh_views({v.mountpoint: v for p in plans.values() for v in p.views.values()}
                      .values())
    nfs_configs = {file: plan.text for file, plan in plans.items()}
    boot_out = out or cluster.dirs.boot_dir
    config_out = config_dir or (out / "config" if out else state.paths.home / "config")
    with Progress(console=console, transient=True, disable=as_json) as bar:
        task = bar.add_task("rendering boot files", total=len(cluster.nodes) or None)
        report = render_tree(catalog, boot_out, config_out, nfs_configs=nfs_configs,
                             progress=lambda done, total: bar.update(task, completed=done,
                                                                     total=total))
    if as_json:
        emit_json({"written": report.written, "unchanged": report.unchanged,
                   "removed": report.removed, "boot_dir": str(boot_out),
                   "config_dir": str(config_out)})
        return
    for path in report.written:
        console.print(f"wrote {path}")
    for path in report.removed:
        console.print(f"removed {path}")
    console.print(f"{len(report.written)} written, {report.unchanged} unchanged, "
                  f"{len(report.removed)} removed: boot tree {boot_out}, configs {config_out}")
