"""Per-node work a boot triggers (remount a server-side union, normalise whiteouts), guarded.

A node's fetch of its own boot script (`/boot/<node>.ipxe`, or its TFTP twin) is the moment
its tree may be prepared: the node is between firmware and initramfs, nothing of its root is
mounted. Since anyone can ask for any URL, the fetch counts only when:
- it came from the node's own address (`peer == node.address`; where `oneroot serve` pins
  addresses to MACs, that also means from its MAC);
- the server answered the node's DHCP within `boot_window` seconds before, and the node has
  sent no initramfs stage report since (a running node, whose tree is mounted, has);
- no job for the node ran within `boot_work_debounce` seconds, nor waits already;
- fewer than `boot_work_queue` jobs wait.
Everything else is refused with a log line (`boot.work_refused node=... reason=...`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address

from oneroot.model.events import BootEvent
from oneroot.model.limits import Limits

log = logging.getLogger(__name__)

_DHCP_ANSWERS = ("dhcp.ack", "dhcp.offer")


class BootWork:
    """`gate(event)` for every boot event; runs `work(node)` for the fetches that count."""

    def __init__(self, *, limits: Limits, address_of: Callable[[str], IPv4Address | None],
                 is_boot_script: Callable[[str, str], bool],
                 work: Callable[[str], Awaitable[None]], clock: Callable[[], float]) -> None:
        self._limits = limits
        self._address_of = address_of
        self._is_boot_script = is_boot_script
        self._work = work
        self._clock = clock
        self._armed: dict[str, float] = {}  # node -> time of its last DHCP answer
        self._last_run: dict[str, float] = {}
        self._waiting: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.refused = 0
        self.started = 0

    def gate(self, event: BootEvent) -> None:
        node = event.node
        if node is None:
            return
        if event.kind in _DHCP_ANSWERS:
            self._armed[node] = event.time  # names come from the inventory: bounded
            return
        if event.kind == "stage":
            self._armed.pop(node, None)  # its initramfs runs: from now on its tree is in use
            return
        if event.kind not in ("http.done", "tftp.done") or event.file is None:
            return
        if not self._is_boot_script(node, event.file):
            return  # the kernel, the initramfs: not the start of a boot
        reason = self._refusal(node, event)
        if reason is not None:
            self.refused += 1
            log.warning("boot.work_refused node=%s peer=%s file=%s reason=%s", node,
                        event.peer, event.file, reason)
            return
        del self._armed[node]
        self._waiting.add(node)
        self.started += 1
        task = asyncio.get_running_loop().create_task(self._run(node))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refusal(self, node: str, event: BootEvent) -> str | None:
        limits = self._limits
        address = self._address_of(node)
        if address is None or event.peer != address:
            return f"request from {event.peer}, not from the node's address {address}"
        armed = self._armed.get(node)
        if armed is None or event.time - armed > limits.boot_window:
            return "no DHCP answer to the node since its last boot (it runs, or was not asked)"
        if node in self._waiting:
            return "a job for the node waits already"
        last = self._last_run.get(node)
        if last is not None and event.time - last < limits.boot_work_debounce:
            return f"a job for the node ran {event.time - last:.0f} s ago"
        if len(self._waiting) >= limits.boot_work_queue:
            return f"{len(self._waiting)} jobs wait (boot_work_queue)"
        return None

    async def _run(self, node: str) -> None:
        try:
            await self._work(node)
        except Exception as exc:
            log.error("boot.work_failed node=%s error=%s", node, exc)
        finally:
            self._waiting.discard(node)
            self._last_run[node] = self._clock()

    async def drain(self) -> None:
        """Wait for the jobs that started (tests, shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks))
