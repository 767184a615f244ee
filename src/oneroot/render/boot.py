"""Per-node boot files: the kernel command line, pxelinux, iPXE and GRUB configs.

The command line is

    ip=dhcp root=<spec> [softlevel=NAME | systemd.unit=NAME.target] [console=ttyS0,115200]
            [oneroot.status=URL] <the storage backend's args> <the profile's extra kernel args>

The storage backend's args are `oneroot.union.lowerxattrs=off` on ganesha-ceph
(`oneroot.ops.boot.storage_kernel_args`).

`BOOTIF=01-<mac>` (which NIC booted) is not part of it: pxelinux appends it itself when the
label says `IPAPPEND 2`, so the same command line serves iPXE and GRUB, where it is absent.
Extra args come last so that they override what oneroot put before them.
"""

from __future__ import annotations

import re

from oneroot.errors import ConfigError
from oneroot.model import InitSystem
from oneroot.net import MacAddress
from oneroot.render._env import render_template
from oneroot.render.context import DefaultBootContext, NodeBootContext

# x86 COMMAND_LINE_SIZE is 2048 bytes including the terminating NUL; longer is cut silently.
MAX_CMDLINE = 2047
# What pxelinux adds for `IPAPPEND 2`: " BOOTIF=01-aa-bb-cc-dd-ee-ff".
_BOOTIF_LENGTH = len(" BOOTIF=01-") + 17
# Arguments GRUB takes as one word without quotes; anything else (notably `;`, GRUB's command
# separator, which every layered root= spec contains) is single-quoted.
_GRUB_BARE = re.compile(r"[A-Za-z0-9_./,:=+@%-]+")


def runlevel_args(ctx: NodeBootContext) -> tuple[str, ...]:
    """How the node's runlevel reaches its init.

    For an image whose init system is not recorded, both forms are given: systemd ignores
    `softlevel=` and OpenRC ignores `systemd.unit=`, so the right one takes effect.
    """
    if ctx.runlevel is None:
        return ()
    systemd = f"systemd.unit={ctx.runlevel}.target"
    openrc = f"softlevel={ctx.runlevel}"
    match ctx.init_system:
        case InitSystem.SYSTEMD:
            return (systemd,)
        case InitSystem.OPENRC:
            return (openrc,)
        case _:
            return (openrc, systemd)


def cmdline_args(ctx: NodeBootContext) -> tuple[str, ...]:
    args = ["ip=dhcp", f"root={ctx.root_spec}", *runlevel_args(ctx)]
    if ctx.serial is not None:
        args.append(ctx.serial.kernel_arg)
    if ctx.status_url is not None:
        args.append(f"oneroot.status={ctx.status_url}")
    args.extend(ctx.kernel_args)
    for arg in args:
        if not arg or any(c.isspace() for c in arg):
            raise ConfigError(
                f"kernel argument {arg!r} of node {ctx.name} is empty or contains white space",
                hint="give one argument per item, without spaces",
            )
    return tuple(args)


def render_cmdline(ctx: NodeBootContext) -> str:
    """The kernel command line (without pxelinux's `BOOTIF=`), one line, no newline."""
    cmdline = " ".join(cmdline_args(ctx))
    _check_length(ctx, cmdline)
    return cmdline


def pxelinux_filename(mac: MacAddress) -> str:
    """Where pxelinux looks for a NIC's config, relative to the TFTP root."""
    return f"pxelinux.cfg/{mac.pxelinux_name}"


def grub_filename(mac: MacAddress, *, prefix: str = "grub") -> str:
    """Where network GRUB looks first: `$prefix/grub.cfg-01-<mac>`.

    `prefix` is the directory the GRUB image was built with (`grub-mknetdir --subdir=grub`),
    relative to the TFTP root.
    """
    return f"{prefix}/grub.cfg-{mac.pxelinux_name}"


def ipxe_filename(node: str) -> str:
    """The node's iPXE script, relative to the boot dir (served at `boot_url`)."""
    return f"{node}.ipxe"


def render_pxelinux(ctx: NodeBootContext) -> str:
    """`pxelinux.cfg/01-<mac>`: boots the node straight away, kernel and initramfs by TFTP."""
    append = f"initrd={ctx.initramfs} {render_cmdline(ctx)}"
    _check_length(ctx, append, extra=_BOOTIF_LENGTH)
    return render_template("pxelinux.cfg.j2", ctx=ctx, append=append)


def render_pxelinux_default(ctx: DefaultBootContext) -> str:
    """`pxelinux.cfg/default`, for machines oneroot does not know: boot the local disk.

    A plain prompt rather than `menu.c32`, so it works with nothing but `pxelinux.0` (and
    `ldlinux.c32`) in the boot dir.
    """
    return render_template("pxelinux-default.cfg.j2", ctx=ctx)


def render_ipxe(ctx: NodeBootContext) -> str:
    """The node's iPXE script: kernel and initramfs over HTTP; on failure, say so and retry."""
    return render_template(
        "node.ipxe.j2", ctx=ctx, cmdline=render_cmdline(ctx),
        retry_milliseconds=ctx.retry_seconds * 1000,
    )


def render_grub(ctx: NodeBootContext) -> str:
    """A GRUB config for UEFI nodes booting GRUB from the network (files by TFTP)."""
    args = " ".join(grub_quote(arg) for arg in cmdline_args(ctx))
    render_cmdline(ctx)  # the length check
    return render_template("grub.cfg.j2", ctx=ctx, args=args)


def grub_quote(arg: str) -> str:
    if _GRUB_BARE.fullmatch(arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


def _check_length(ctx: NodeBootContext, text: str, *, extra: int = 0) -> None:
    length = len(text.encode()) + extra
    if length > MAX_CMDLINE:
        raise ConfigError(
            f"the kernel command line of node {ctx.name} is {length} bytes, the kernel keeps "
            f"only {MAX_CMDLINE}",
            hint="shorten the root= spec (fewer layers) or the extra kernel args",
        )
