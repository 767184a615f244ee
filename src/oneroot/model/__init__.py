"""Frozen values of the cluster: settings, groups (profiles), nodes, images, runlevels.

`resolve_cluster(inv)` resolves a whole inventory once per load into a `ResolvedCluster`: each
node's `Profile` merged from the built-in defaults, its groups (in order, later wins) and its
own overrides, with where each value came from, and its image looked up. `Paths` and
`ClusterDirs` say where oneroot's state and the cluster's directories are on the server.
"""

from oneroot.model.cluster import (
    DhcpMode,
    Group,
    Image,
    InitSystem,
    LayerFs,
    NfsServerKind,
    Node,
    ResolvedNode,
    Runlevel,
    Settings,
    resolve,
)
from oneroot.model.names import check_name
from oneroot.model.paths import ClusterDirs, Paths
from oneroot.model.profile import (
    DEFAULT_PROFILE,
    LIST_KEYS,
    PROFILE_KEYS,
    BiosLoader,
    Firmware,
    Profile,
    ProfileValue,
    UefiLoader,
    UnionMode,
    check_profile_value,
)
from oneroot.model.resolved import ResolvedCluster, resolve_cluster

__all__ = [
    "DEFAULT_PROFILE",
    "LIST_KEYS",
    "PROFILE_KEYS",
    "BiosLoader",
    "ClusterDirs",
    "DhcpMode",
    "Firmware",
    "Group",
    "Image",
    "InitSystem",
    "LayerFs",
    "NfsServerKind",
    "Node",
    "Paths",
    "Profile",
    "ProfileValue",
    "ResolvedCluster",
    "ResolvedNode",
    "Runlevel",
    "Settings",
    "UefiLoader",
    "UnionMode",
    "check_name",
    "check_profile_value",
    "resolve",
    "resolve_cluster",
]
