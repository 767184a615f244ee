"""A real DHCP client for tests: busybox udhcpc run once in a namespace, its lease as a dict;
or kept running (`Udhcpc.running`), configuring its address, its script's events in a log.

    client = Udhcpc.install(tmp_path)          # copies busybox, writes the hook script
    env = client.lease(lambda *argv: ns.run(*argv, check=False), "eth0")
    env.get("ip"), env.get("hostname"), env.get("boot_file")   # {} when nothing was bound
    argv, events = client.running("eth0", tmp_path / "renewer")  # start argv in the namespace
    events.read()   # [("deconfig", {}), ("bound", {"ip": ..., "serverid": ...}), ("renew", ...)]
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oneroot.initramfs.busybox import fetch_busybox
from oneroot.testing.cache import suite_cache_dir

_HOOK = """#!/bin/sh
env > "$(dirname "$0")/env.$1"
exit 0
"""


# A running client's script: configures the address like a real one (its unicast RENEW is sent
# from it) and appends each event with the lease's address and server id to `events`.
_RUNNING_HOOK = """#!/bin/sh
case "$1" in
bound|renew) ip addr replace "$ip/$mask" dev "$interface" ;;
deconfig) ip addr flush dev "$interface" ;;
esac
echo "$1 ip=$ip serverid=$serverid" >> "$(dirname "$0")/events"
exit 0
"""


@dataclass(frozen=True, slots=True)
class UdhcpcEvents:
    """The events a running udhcpc gave its script, oldest first."""

    path: Path

    def read(self) -> list[tuple[str, dict[str, str]]]:
        if not self.path.exists():
            return []
        events = []
        for line in self.path.read_text().splitlines():
            kind, *fields = line.split()
            events.append((kind, dict(f.split("=", 1) for f in fields if f[-1] != "=")))
        return events


@dataclass(frozen=True, slots=True)
class Udhcpc:
    busybox: Path
    hook: Path

    @classmethod
    def install(cls, directory: Path) -> Udhcpc:
        busybox = directory / "busybox"
        shutil.copy2(fetch_busybox(cache_dir=suite_cache_dir()).path, busybox)
        hook = directory / "hook" / "print-env"
        hook.parent.mkdir(parents=True, exist_ok=True)
        hook.write_text(_HOOK)
        hook.chmod(0o755)
        return cls(busybox=busybox, hook=hook)

    def lease(self, run: Callable[..., Any], interface: str, extra: Sequence[str] = (), *,
              tries: int = 4) -> dict[str, str]:
        """Run udhcpc once (`tries` DISCOVERs, 1 s apart) through `run(*argv, timeout=...)`,
        with `extra` arguments (`-V VENDOR`, `-x OPT:VALUE`); the variables udhcpc gave its
        script for the lease, or {} when none was bound."""
        for old in self.hook.parent.glob("env.*"):
            old.unlink()
        run(str(self.busybox), "udhcpc", "-f", "-q", "-n", "-t", str(tries), "-T", "1", "-i",
            interface, "-s", str(self.hook), *extra, timeout=30 + 5 * tries)
        env = self.hook.parent / "env.bound"
        if not env.exists():
            return {}
        return dict(line.split("=", 1) for line in env.read_text().splitlines() if "=" in line)

    def running(self, interface: str, directory: Path, *extra: str
                ) -> tuple[list[str], UdhcpcEvents]:
        """The argv of a udhcpc that stays (foreground, renewing; SIGUSR1: renew now) and
        configures `interface`, with `extra` arguments, and where its events go
        (`directory`)."""
        directory.mkdir(parents=True, exist_ok=True)
        hook = directory / "hook"
        hook.write_text(_RUNNING_HOOK)
        hook.chmod(0o755)
        return ([str(self.busybox), "udhcpc", "-f", "-i", interface, "-s", str(hook), *extra],
                UdhcpcEvents(directory / "events"))
