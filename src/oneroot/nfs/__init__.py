"""Serving the cluster's NFS exports: the kernel server (`knfsd`: exports file + `exportfs
-ra`), nfs-ganesha run and supervised from asyncio (`ganesha`), and the masked read-only view
of the server's own `/` that is exported in its place (`view`).

Errors: `ExternalToolError` (a program failed or is missing), `ConfigError` and its
`ViewUnsupported` (the kernel cannot build the view here).
"""

from oneroot.nfs.ganesha import (
    GaneshaFiles,
    GaneshaServer,
    GaneshaStatus,
    ReloadAction,
    core_part,
    render_config,
)
from oneroot.nfs.knfsd import (
    EXPORTS_FILE,
    KnfsdResult,
    apply_exports,
    default_nfs_server,
    kernel_has_nfsd,
)
from oneroot.nfs.view import (
    ViewSpec,
    ViewStatus,
    ViewUnsupported,
    mount_view,
    unmount_view,
    update_view,
    view_spec,
)
from oneroot.render.cluster import needs_view

__all__ = [
    "EXPORTS_FILE",
    "GaneshaFiles",
    "GaneshaServer",
    "GaneshaStatus",
    "KnfsdResult",
    "ReloadAction",
    "ViewSpec",
    "ViewStatus",
    "ViewUnsupported",
    "apply_exports",
    "core_part",
    "default_nfs_server",
    "kernel_has_nfsd",
    "mount_view",
    "needs_view",
    "render_config",
    "unmount_view",
    "update_view",
    "view_spec",
]
