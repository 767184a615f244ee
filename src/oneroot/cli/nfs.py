"""`oneroot nfs apply|status|instance|keepalived`: the exports of image roots and node
layers, and (ganesha-ceph) the failover of each server's service address."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from oneroot.cli.output import console, emit_json, plain, table
from oneroot.cli.state import State, json_option, pass_state
from oneroot.errors import ExternalToolError
from oneroot.fsutil import write_if_changed
from oneroot.ops import nfs_instance
from oneroot.ops.nfs_serving import apply_nfs, nfs_status
from oneroot.render.keepalived import keepalived_context, render_keepalived


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
    for item in result.must_reboot:
        console.print(plain(f"warning: {item.message}"))


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


@nfs.group("instance")
def instance() -> None:
    """The ganesha-ceph instance of a service address (setting ha_servers): run by the server
    that holds the address; keepalived (`oneroot nfs keepalived`) starts and stops it."""


@instance.command("start")
@click.argument("server")
@pass_state
def instance_start(state: State, server: str) -> None:
    """Start SERVER's instance here (a name or service address in ha_servers)."""
    with console.status(f"starting the ganesha instance of {server}…"):
        st = nfs_instance.start_instance(state.cluster(), state.paths, server)
    console.print(f"{st.name}: ganesha pid {st.pid} on {st.service} (nodeid {st.service})")


@instance.command("stop")
@click.argument("server")
@click.option("--no-evict", is_flag=True,
              help="Keep its CephFS sessions for a successor to reclaim (the MDS holds their "
                   "capabilities meanwhile).")
@pass_state
def instance_stop(state: State, server: str, no_evict: bool) -> None:
    """Stop SERVER's instance here and evict the CephFS sessions it held."""
    done = nfs_instance.stop_instance(state.cluster(), state.paths, server, evict=not no_evict)
    if done.pid is None:
        console.print(f"{done.name}: no instance runs here")
        return
    console.print(f"{done.name}: stopped ganesha pid {done.pid}, "
                  f"evicted {done.evicted} CephFS session(s)")


@instance.command("status")
@json_option
@pass_state
def instance_status(state: State, as_json: bool) -> None:
    """Each service address: held here or not, its instance's pid, whether it listens."""
    found = nfs_instance.instance_status(state.cluster(), state.paths)
    if as_json:
        emit_json([st.as_json() for st in found])
        return
    table(None, ["server", "service address", "held here", "ganesha pid", "listening"],
          [(st.name, str(st.service), "yes" if st.held else "no", str(st.pid or "-"),
            "yes" if st.listening else "no") for st in found])


@instance.command("notify", hidden=True)
@click.argument("kind")
@click.argument("vrrp_instance")
@click.argument("vrrp_state")
@click.argument("priority", required=False)
@pass_state
def instance_notify(state: State, kind: str, vrrp_instance: str, vrrp_state: str,
                    priority: str | None) -> None:
    """keepalived's notify: `INSTANCE oneroot_NAME MASTER|BACKUP|FAULT|STOP PRIORITY`."""
    console.print(nfs_instance.notify(state.cluster(), state.paths, vrrp_instance, vrrp_state))


@nfs.command("keepalived")
@click.argument("server")
@click.option("--interface", default=None, help="The segment's interface [default: the "
              "setting interface].")
@click.option("--print", "print_only", is_flag=True,
              help="Print the config instead of running keepalived with it.")
@pass_state
def nfs_keepalived(state: State, server: str, interface: str | None, print_only: bool) -> None:
    """Run keepalived (VRRP only, in the foreground) for boot server SERVER of ha_servers:
    every service address, SERVER's own first; adverts by unicast to the peers, and adverts
    from anyone else dropped. Its notify starts and stops the instances."""
    settings = state.cluster().settings
    notify = (*_oneroot_command(), "--home", str(state.paths.home), "nfs", "instance",
              "notify")
    text = render_keepalived(keepalived_context(settings, server, notify=notify,
                                                interface=interface or settings.interface))
    if print_only:
        click.echo(text, nl=False)
        return
    run = state.paths.run_dir / "keepalived"
    write_if_changed(run / "keepalived.conf", text.encode())
    argv = ["keepalived", "--dont-fork", "--log-console", "--vrrp", "-f",
            str(run / "keepalived.conf"), "-p", str(run / "keepalived.pid"), "-r",
            str(run / "vrrp.pid")]
    if shutil.which(argv[0]) is None:
        raise ExternalToolError("keepalived not found", hint="apt-get install keepalived")
    sys.stdout.flush()
    os.execvp(argv[0], argv)


def _oneroot_command() -> tuple[str, ...]:
    """How keepalived runs oneroot: the entry point beside this Python. keepalived resolves
    a script's symbolic links before it runs it, so `VENV/bin/python -m oneroot` would run
    the system Python, without the venv's packages."""
    script = Path(sys.executable).parent / "oneroot"
    if script.is_file() and os.access(script, os.X_OK):
        return (str(script),)
    return (os.path.realpath(sys.executable), "-m", "oneroot")
