"""knfsd's `subtree_check` against what is applied: the exports lines of oneroot's exports
file that must carry it (layers and images; `ops.knfsd_layout.check_subtrees` renders them),
and the running nodes that should reboot when an apply turns one on.

Measured in the knfsd server VM (tests/e2e/test_knfsd.py,
`test_handles_got_before_subtree_check_go_stale`): a handle knfsd gave under
`no_subtree_check` names a file by inode and generation alone; under `subtree_check` knfsd must
find that file's place below the export, which it does only while the file's dentry is in its
cache: once the server's dcache drops it, the old handle is STALE. A client-mode node booted
on the old export kept working through it (its kernel client looks a stale path up again;
nfsd pins the files it holds open), but a file it keeps open is named by its old handle again
when the NFS server restarts, where the reclaim may fail (not measured). So such a node should
reboot; `nfs apply` and `serve` say which (docs/nfs.md).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from oneroot.inventory import database
from oneroot.inventory.events import EventStore
from oneroot.model.paths import Paths
from oneroot.nfs.view import MountEntry, filesystem_of, is_filesystem_root

# The comments `render.cluster.nfs_exports` gives the exports that must be `subtree_check`
# unless a filesystem of their own (a masked view and a server-side union are overlayfs).
_CHECKED = ("image ", "EROFS files", "diff-overlay of node ", "layer of group ")
_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportLine:
    """One line of an exports file oneroot wrote, with the comment above it."""

    comment: str
    path: str
    clients: tuple[str, ...]  # an address or a network each
    options: tuple[str, ...]  # of its first client (all of a line's clients share them)

    @property
    def subtree_checked(self) -> bool:
        return "subtree_check" in self.options

    @property
    def wants_check(self) -> bool:
        """An export that is `subtree_check` unless its directory is a filesystem's root."""
        return (self.comment.startswith(_CHECKED)
                and not self.comment.endswith("(masked view)"))


def export_lines(text: str) -> list[ExportLine]:
    """The export lines of an exports file `render.cluster.render_exports` wrote."""
    found = []
    comment = ""
    for line in text.splitlines():
        if line.startswith("# "):
            comment = line[2:]
        elif line.strip() and not line.startswith("#"):
            path, *clients = line.split()
            names = tuple(c.split("(", 1)[0] for c in clients)
            options = tuple(clients[0].split("(", 1)[1].rstrip(")").split(",")) if clients \
                else ()
            found.append(ExportLine(comment=comment, clients=names, options=options,
                                    path=_OCTAL.sub(lambda m: chr(int(m[1], 8)), path)))
    return found


def read_export_lines(exports_file: Path) -> list[ExportLine]:
    try:
        return export_lines(exports_file.read_text())
    except OSError:
        return []


def unchecked_on_shared_filesystems(lines: Iterable[ExportLine], mounts: list[MountEntry]
                                    ) -> list[tuple[ExportLine, MountEntry | None]]:
    """Each line that should be `subtree_check` but is not, though its directory is not the
    root of a filesystem of its own in `mounts`; with the filesystem it is on."""
    return [(line, filesystem_of(Path(line.path), mounts)) for line in lines
            if line.wants_check and not line.subtree_checked
            and not is_filesystem_root(Path(line.path), mounts)]


@dataclass(frozen=True, slots=True, kw_only=True)
class MustReboot:
    """A running node that may have mounted `paths` while they were `no_subtree_check`: it
    should reboot."""

    node: str
    paths: tuple[str, ...]

    @property
    def message(self) -> str:
        return (f"node {self.node} should reboot: {', '.join(self.paths)} "
                f"{'is' if len(self.paths) == 1 else 'are'} exported subtree_check now, and "
                "the file handles it got before go stale (a file it keeps open may fail at the "
                "next NFS server restart)")


def newly_checked(before: str, after: str, addresses: Mapping[str, ipaddress.IPv4Address],
                  running: Iterable[str]) -> list[MustReboot]:
    """The `running` nodes (name → address in `addresses`) that may mount an export `after`
    turns `subtree_check` where `before` had it `no_subtree_check` (the same path), one
    each, with those exports."""
    old = {line.path: line for line in export_lines(before)}
    turned: dict[str, list[str]] = {}
    for line in export_lines(after):
        was = old.get(line.path)
        if not line.subtree_checked or was is None or was.subtree_checked:
            continue
        networks = [ipaddress.ip_network(c, strict=False) for c in line.clients
                    if _is_address(c)]
        for node in set(running) & set(addresses):
            if any(addresses[node] in net for net in networks):
                turned.setdefault(node, []).append(line.path)
    return [MustReboot(node=n, paths=tuple(turned[n])) for n in sorted(turned)]


def _is_address(client: str) -> bool:
    try:
        ipaddress.ip_network(client, strict=False)
    except ValueError:
        return False  # a host name or wildcard: oneroot writes none
    return True


def running_nodes(paths: Paths) -> set[str]:
    """Nodes that booted and were not seen powered off since (the boot events)."""
    if not database.exists(paths, paths.events_db):
        return set()
    events = EventStore(database.locate(paths, paths.events_db))
    try:
        return {n for n, st in events.status().items() if st.stage != "off"}
    finally:
        events.close()
