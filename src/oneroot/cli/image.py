"""`oneroot image use|create|list|exec`: the root filesystems nodes boot."""

from __future__ import annotations

from pathlib import Path

import click

from oneroot.cli.image_block import image_block
from oneroot.cli.image_import import image_import
from oneroot.cli.image_rollout import image_rollback, image_rollout
from oneroot.cli.image_versions import image_diff, image_gc, image_versions
from oneroot.cli.output import console, emit_json, plain, show_changes, table
from oneroot.cli.state import State, json_option, pass_state
from oneroot.errors import UsageError
from oneroot.initramfs.kernel import fetch_kernel
from oneroot.model.cluster import InitSystem
from oneroot.model.resolved import resolve_cluster
from oneroot.nfs.viewpolicy import VISIBLE
from oneroot.ops import inventory as inv_ops
from oneroot.ops.image_build import exec_new_version
from oneroot.ops.image_exec import exec_in_image
from oneroot.ops.image_secrets import HINT as SECRETS_HINT
from oneroot.ops.image_secrets import unmasked_secrets
from oneroot.ops.image_versions import find_image
from oneroot.ops.images import LAB_MODULES, create_image, use_image
from oneroot.ops.views import view_report


@click.group()
def image() -> None:
    """Root filesystems nodes boot (the server's / or one made by oneroot)."""


@image.command("use")
@click.argument("root", type=click.Path(path_type=Path, file_okay=False))
@click.option("--name", default="default", show_default=True)
@click.option("--init-system", type=click.Choice(["systemd", "openrc"]), default=None,
              help="Override detection.")
@click.option("--expose", "expose", multiple=True, metavar="PATH",
              help="Let nodes see PATH of a live root beyond its system directories "
                   "(repeat; replaces the image's list). See `oneroot image show`.")
@pass_state
def image_use(state: State, root: Path, name: str, init_system: str | None,
              expose: tuple[str, ...]) -> None:
    """Use ROOT (e.g. `/`, the seed's way) as image NAME."""
    exposed = list(expose) if expose else None
    if init_system is not None:
        with state.store() as store:
            show_changes(inv_ops.put_image(store, name, root, InitSystem(init_system),
                                           expose=exposed))
    else:
        with state.store() as store:
            result = use_image(store, root, name=name, expose=exposed)
        console.print(f"image {result.name}: {result.root} ({result.init_system})")
    inv = state.load()
    secrets = unmasked_secrets(inv.images[name], inv.settings)
    if secrets:
        click.echo(f"warning: image {name} ({inv.images[name].root}) holds what the masked "
                   f"view of a live root hides, and nodes read it as it is: "
                   f"{'; '.join(secrets)}", err=True)
        click.echo("hint: " + SECRETS_HINT.replace("NAME", name), err=True)


@image.command("show")
@click.argument("name", default="default")
@json_option
@pass_state
def image_show(state: State, name: str, as_json: bool) -> None:
    """What nodes see of image NAME (or of the image whose root is NAME, e.g. `/`): for a
    live root, every masked path and why."""
    inv = state.load()
    if name.startswith("/"):
        name = next((i.name for i in sorted(inv.images.values(), key=lambda i: i.name)
                     if str(i.root) == str(Path(name).resolve())), name)
    image = inv.images.get(name)
    report = view_report(resolve_cluster(inv), state.paths, name)
    if image is None or report is None:
        root = str(image.root) if image else None
        if as_json:
            emit_json({"name": name, "root": root, "view": None, "masks": []})
        else:
            console.print(plain(f"image {name}: {root} is exported as it is (not a live "
                                "root: nothing masked)"))
        return
    exposed = [str(p) for p in image.expose]
    masks = [("/" + str(m.path), str(m.kind), m.reason) for m in report.masks]
    if as_json:
        emit_json({"name": name, "root": str(image.root), "view": str(report.spec.mountpoint),
                   "mounted": report.mounted, "expose": exposed,
                   "masks": [{"path": p, "kind": k, "reason": r} for p, k, r in masks]})
        return
    console.print(plain(f"image {name}: {image.root}, exported as the masked view "
                        f"{report.spec.mountpoint} "
                        f"({'mounted' if report.mounted else 'not mounted'})"))
    console.print(plain("nodes see: the system directories (" + " ".join(VISIBLE) + "), "
                        "world-readable entries only"
                        + (", plus " + " ".join(exposed) if exposed else "")))
    table(f"hidden from nodes ({len(masks)})", ["path", "how", "why"], masks)


@image.command("create")
@click.argument("name")
@click.option("--suite", default="bookworm", show_default=True)
@click.option("--init", "init_system", type=click.Choice(["systemd", "openrc"]),
              default="systemd", show_default=True)
@click.option("--kernel", "kernel_version", default=None,
              help="Node kernel whose modules go in the image [default: Debian's current].")
@click.option("--package", "packages", multiple=True, help="Extra Debian package(s).")
@click.option("--mirror", default=None, help="[default: the host's Debian mirror]")
@click.option("--lab-modules", is_flag=True,
              help="Only the modules a lab node needs (small), not the whole tree.")
@pass_state
def image_create(state: State, name: str, suite: str, init_system: str,
                 kernel_version: str | None, packages: tuple[str, ...], mirror: str | None,
                 lab_modules: bool) -> None:
    """Build a Debian image with mmdebstrap (cached: a second run takes seconds)."""
    cache = state.paths.cache_dir
    # ganesha-ceph exports images from CephFS only: build them there.
    cephfs = state.load().settings.cephfs_mount
    dest = Path(cephfs) / "images" if cephfs is not None else state.paths.home / "images"
    with console.status("fetching the node kernel…"):
        kernel = fetch_kernel(kernel_version, cache_dir=cache)
    with state.store() as store, console.status(f"building image {name}…") as status:
        result = create_image(
            store, name, dest_dir=dest, cache_dir=cache, suite=suite,
            init=init_system, kernel_modules_dir=kernel.modules_dir,
            modules=LAB_MODULES if lab_modules else None, packages=packages, mirror=mirror,
            progress=lambda msg: status.update(msg))
    console.print(f"image {result.name}: {result.root} ({result.init_system}, "
                  f"{'from cache' if result.cached else 'built'} in {result.seconds:.1f} s)")


@image.command("list")
@json_option
@pass_state
def image_list(state: State, as_json: bool) -> None:
    """Images, each as `image=NAME` boots it: its latest version's root (see `image
    versions NAME`)."""
    images = [i.at(None) for i in sorted(state.load().images.values(), key=lambda i: i.name)]
    if as_json:
        emit_json([{"name": i.name, "root": str(i.root), "init_system": str(i.init_system),
                    "description": i.description,
                    **({"latest": i.ref} if i.versions else {})} for i in images])
        return
    table(None, ["image", "root", "init", "description"],
          [(i.ref if i.versions else i.name, i.root, i.init_system, i.description)
           for i in images])


@image.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
@click.option("--no-record", is_flag=True, help="Do not compare the tree before and after.")
@pass_state
def image_exec(state: State, name: str, command: tuple[str, ...], no_record: bool) -> None:
    """Run COMMAND inside image NAME: `oneroot image exec NAME -- apt-get install -y htop`.

    It makes a new version (NAME@N+1) over the latest, which stays as it was: a chroot with
    /proc, /sys and /dev mounted and service starts blocked (policy-rc.d); the version exists
    only if COMMAND exits 0. What changed is recorded under HOME/images/NAME.changes/. For an
    image that is the server's live `/`, the command runs on the server itself, without a
    chroot, and there are no versions.
    """
    inv = state.load()
    if find_image(inv, name).live:
        result = exec_in_image(inv, state.paths.home, name, command, record=not no_record)
    else:
        with state.store() as store:
            result = exec_new_version(store, state.paths, name, command,
                                      record=not no_record)
    console.print(result.summary(), markup=False)
    for line in result.packages.installed[:20]:
        console.print(f"  + {line}", markup=False)
    if result.returncode != 0:
        raise UsageError(f"the command exited {result.returncode} inside image {name}",
                         hint="its output is above; " + (
                             "the server's / keeps what it changed" if result.parent is None
                             else f"no version was made: {name}@{result.parent} stays the "
                                  "latest"))


image.add_command(image_versions)
image.add_command(image_diff)
image.add_command(image_gc)
image.add_command(image_rollback)
image.add_command(image_rollout)
image.add_command(image_import)
image.add_command(image_block)
