"""Frozen values of the cluster: settings, groups (profiles), nodes, images, runlevels.

`resolve(node, groups, settings)` merges a node's profile from built-in defaults, its groups
(in order, later wins) and its own overrides, remembering where each value came from.
"""

from oneroot.model.cluster import (
    DEFAULT_PROFILE,
    LIST_KEYS,
    PROFILE_KEYS,
    DhcpMode,
    Group,
    Image,
    InitSystem,
    NfsServerKind,
    Node,
    ProfileValue,
    ResolvedNode,
    Runlevel,
    Settings,
    check_name,
    check_profile_value,
    resolve,
)

__all__ = [
    "DEFAULT_PROFILE",
    "LIST_KEYS",
    "PROFILE_KEYS",
    "DhcpMode",
    "Group",
    "Image",
    "InitSystem",
    "NfsServerKind",
    "Node",
    "ProfileValue",
    "ResolvedNode",
    "Runlevel",
    "Settings",
    "check_name",
    "check_profile_value",
    "resolve",
]
