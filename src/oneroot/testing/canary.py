"""What a `lab try` canary on a real network may leave behind (`lab.canarynet`), as seen from
any mount namespace: a test asks after a try that nothing of it is left.

A name in `ip netns list` is not enough on its own: a namespace lives on while a process runs
in it, whether or not its name is still there (a teardown that removed the name but not the
QEMU or the DHCP responder). So this also looks for the try's state files and for any process
whose command line names the canary's MAC (its QEMU's `-device …,mac=`, its DHCP responder's
argument): the MAC is random per try, so no other process matches.
"""

from __future__ import annotations

from pathlib import Path

from oneroot.lab.canarynet import TRY_NETNS_PREFIX, TRY_STATE_DIR
from oneroot.lab.netns import list_netns


def processes_naming(needle: str) -> list[str]:
    """`PID: ARGV0` of each process whose command line holds `needle` (case-insensitive)."""
    found = []
    wanted = needle.lower().encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        if wanted in argv.lower():
            argv0 = argv.split(b"\0")[0].decode(errors="replace")
            found.append(f"{proc.name}: {argv0}")
    return found


def leftovers(mac: str, *, state_dir: Path = TRY_STATE_DIR) -> list[str]:
    """Namespaces (by name), state files and processes of `lab try` canaries, the last
    those of the canary with `mac`; empty when nothing is left."""
    found = [f"namespace {n}" for n in list_netns() if n.startswith(TRY_NETNS_PREFIX)]
    if state_dir.is_dir():
        found += [f"state file {p}" for p in sorted(state_dir.glob("*.json"))]
    return found + [f"process {p}" for p in processes_naming(mac)]
