"""Pure renderers of every file oneroot generates: contexts in, text out, no IO.

Per node: `render_cmdline`, `render_pxelinux`, `render_ipxe`, `render_grub` (of a
`NodeBootContext`); for unknown machines `render_pxelinux_default`; for the cluster
`render_exports`, `render_ganesha`, `render_dnsmasq` (of a `ClusterContext`). `ops` builds the
contexts and decides which files exist; templates live in `templates/`.
"""

from oneroot.render.boot import (
    MAX_CMDLINE,
    cmdline_args,
    grub_filename,
    grub_quote,
    ipxe_filename,
    pxelinux_filename,
    render_cmdline,
    render_grub,
    render_ipxe,
    render_pxelinux,
    render_pxelinux_default,
    runlevel_args,
)
from oneroot.render.cluster import (
    nfs_exports,
    render_dnsmasq,
    render_exports,
    render_ganesha,
)
from oneroot.render.context import (
    Access,
    ClusterContext,
    ClusterNode,
    DefaultBootContext,
    GroupLayerExport,
    ImageExport,
    NfsExport,
    NodeBootContext,
    SerialConsole,
)

__all__ = [
    "MAX_CMDLINE",
    "Access",
    "ClusterContext",
    "ClusterNode",
    "DefaultBootContext",
    "GroupLayerExport",
    "ImageExport",
    "NfsExport",
    "NodeBootContext",
    "SerialConsole",
    "cmdline_args",
    "grub_filename",
    "grub_quote",
    "ipxe_filename",
    "nfs_exports",
    "pxelinux_filename",
    "render_cmdline",
    "render_dnsmasq",
    "render_exports",
    "render_ganesha",
    "render_grub",
    "render_ipxe",
    "render_pxelinux",
    "render_pxelinux_default",
    "runlevel_args",
]
