"""Machine-wide kernel settings (the neighbour table's gc_thresh, netdev_max_backlog: the
kernel shows them in the initial network namespace only) that a test or bench raises for its
run, on a machine others run tests and benches on at the same time.

Two rules keep concurrent runs from undoing each other: a value is only ever raised, never
lowered; and afterwards it is put back only if it still holds what this run wrote (a run that
raised it further meanwhile keeps its value, and the last one out restores the original).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

PROC_SYS = Path("/proc/sys")


def restore_unless_changed(path: Path, before: str, ours: str) -> bool:
    """Write `before` back to `path` if it still reads `ours`; True if it did."""
    if path.read_text() != ours:
        return False
    path.write_text(before)
    return True


@contextmanager
def raised_sysctls(wanted: Mapping[str, int], base: Path = PROC_SYS) -> Iterator[None]:
    """Each `name` (`net/core/netdev_max_backlog`) at least `value` inside the block; what
    this block raised is put back after it, unless someone changed it since."""
    written: list[tuple[Path, str, str]] = []
    try:
        for name, value in wanted.items():
            path = base / name
            before = path.read_text()
            if int(before.split()[0]) < value:
                path.write_text(f"{value}\n")
                written.append((path, before, path.read_text()))
        yield
    finally:
        for path, before, ours in reversed(written):
            restore_unless_changed(path, before, ours)
