"""Diff-overlay layers on the server: their directories, the `c 0 0` whiteout, and each node's
generated identity files (hostname, hosts, fstab, machine-id, SSH host keys, network keep-alive).

Later (`oneroot overlay ls/diff/cp/mask/reset/promote`) grows here, on the same primitives:
`safefs` walks a node-writable layer without following its links, `IdentityStore.manifest()`
names the files `reset` must keep.
"""

from oneroot.overlay.identity import (
    GeneratedFile,
    IdentityResult,
    IdentityStore,
    NodeIdentity,
    Secrets,
    identity_files,
    machine_id,
    write_identity,
)
from oneroot.overlay.layer import (
    LayerDirs,
    ensure_layer,
    is_opaque,
    is_whiteout,
    make_whiteout,
    set_opaque,
)

__all__ = [
    "GeneratedFile",
    "IdentityResult",
    "IdentityStore",
    "LayerDirs",
    "NodeIdentity",
    "Secrets",
    "ensure_layer",
    "identity_files",
    "is_opaque",
    "is_whiteout",
    "machine_id",
    "make_whiteout",
    "set_opaque",
    "write_identity",
]
