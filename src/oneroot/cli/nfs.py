"""`oneroot nfs apply|status`: the exports of image roots and node layers."""

from __future__ import annotations

import click

from oneroot.cli.output import console, emit_json, table
from oneroot.cli.state import State, json_option, pass_state
from oneroot.ops.nfs_serving import apply_nfs, nfs_status


@click.group()
def nfs() -> None:
    """The NFS exports: image roots read-only, each node's layer to that node alone."""


@nfs.command("apply")
@pass_state
def nfs_apply(state: State) -> None:
    """Create layer dirs and node identities, mount views, write and apply the exports."""
    cluster = state.cluster()
    with console.status("preparing node layers and exports…"):
        result = apply_nfs(cluster, state.paths)
    console.print(f"{result.plan.kind}: {result.config_path} "
                  f"({'changed' if result.changed else 'unchanged'}, {result.applied})")


@nfs.command("status")
@json_option
@pass_state
def nfs_status_cmd(state: State, as_json: bool) -> None:
    st = nfs_status(state.cluster(), state.paths)
    if as_json:
        emit_json(st.as_json())
        return
    console.print(f"server: {st.server.value}  ganesha pid: {st.ganesha_pid or '-'}  "
                  f"config: {st.config}")
    table(None, ["export", "access", "clients"],
          [(str(e.path), e.access.value, ", ".join(e.clients)) for e in st.exports])
