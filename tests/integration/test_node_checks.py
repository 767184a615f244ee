"""A node's declared checks end to end without a VM: the booted image's reporter
(overlay/identity.py REPORT_SCRIPT, run by bash with the kernel command line bind-mounted)
fetches its checks from the real HttpService, runs them and reports each result before
`runlevel`; `ops.runlevel_watch.check_results` reads them back from the events store. Then
what a node that does not run the script may send: only its own declared checks' indexes, a
known status, a bounded printable message; only inventory addresses may ask."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from oneroot.inventory.events import EventStore
from oneroot.model import Group
from oneroot.model.checks import CheckKind
from oneroot.model.events import CHECK_EVENT, BootEvent
from oneroot.model.limits import DEFAULT_LIMITS, Limits
from oneroot.model.resolved import resolve_cluster
from oneroot.ops.catalog import BootCatalog
from oneroot.overlay.identity import REPORT_SCRIPT
from oneroot.serve.http import HttpService, RepeatedReports
from oneroot.testing.inventory import loopback_settings, make_inventory, make_node
from oneroot.testing.ports import free_port

pytestmark = pytest.mark.integration

NOISY = "printf '\\033[31m[red]boom[/red]\\n'; exit 3"  # output with an escape and markup


def catalog(tmp_path: Path) -> BootCatalog:
    group = Group(name="default", values={
        "check_paths": (str(tmp_path / "here"), str(tmp_path / "missing")),
        "check_commands": ("test $((6*7)) -eq 42", NOISY)})
    inv = make_inventory(nodes=[make_node(1, address="127.0.0.1")], groups=[group],
                         settings=loopback_settings(tmp_path))
    return BootCatalog(resolve_cluster(inv))


@asynccontextmanager
async def served(tmp_path: Path, events: list[BootEvent], *,
                 limits: Limits = DEFAULT_LIMITS) -> AsyncIterator[int]:
    port = free_port()
    cat = catalog(tmp_path)
    service = HttpService(bind="127.0.0.1", port=port, boot_dir=tmp_path, catalog=lambda: cat,
                          on_event=RepeatedReports(events.append), status=dict, limits=limits)
    await service.start()
    try:
        yield port
    finally:
        await service.close()


async def run_reporter(tmp_path: Path, port: int) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(f"ip=dhcp oneroot.status=http://127.0.0.1:{port}/api/v1/report\n")
    script = tmp_path / "report-booted"
    script.write_text(REPORT_SCRIPT)
    script.chmod(0o755)
    proc = await asyncio.create_subprocess_exec(
        "unshare", "--mount", "sh", "-c",
        f'mount --bind "{cmdline}" /proc/cmdline && exec "{script}" runlevel multi-user.target')
    assert await asyncio.wait_for(proc.wait(), 120) == 0


def test_the_node_runs_its_checks_and_reports_each_before_its_runlevel(tmp_path: Path) -> None:
    (tmp_path / "here").write_text("x")
    events: list[BootEvent] = []

    async def main() -> None:
        async with served(tmp_path, events) as port:
            await run_reporter(tmp_path, port)

    asyncio.run(main())
    kinds = [(e.kind, e.stage) for e in events]
    assert kinds == [(CHECK_EVENT, None)] * 4 + [("stage", "runlevel")]  # checks first
    got = {e.detail["check"]: (e.detail["status"], e.detail["message"]) for e in events[:4]}
    assert got == {"0": ("ok", "exit 0: "), "1": ("failed", "exit 1: no such path"),
                   "2": ("ok", "exit 0: "),
                   "3": ("failed", "exit 3: ?[31m[red]boom[/red]")}  # ESC made a `?`

    # The events store gives them back by index, as `lab try` reads them.
    store = EventStore(tmp_path / "events.db")
    try:
        store.record(events)
        found = store.node_events("node01", CHECK_EVENT, since=0)
    finally:
        store.close()
    assert [e.detail["check"] for e in found] == ["0", "1", "2", "3"]
    assert catalog(tmp_path).cluster.nodes["node01"].profile.checks[3].kind is \
        CheckKind.COMMAND


def _post(port: int, body: str, *, source: str = "127.0.0.1") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0)) as conn:
        data = body.encode()
        conn.sendall(b"POST /api/v1/report HTTP/1.0\r\nContent-Type: application/"
                     b"x-www-form-urlencoded\r\nContent-Length: " + str(len(data)).encode()
                     + b"\r\n\r\n" + data)
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    return answer


def _get_checks(port: int, *, source: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0)) as conn:
        conn.sendall(b"GET /api/v1/checks HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    return answer


@pytest.mark.parametrize(("body", "status"), [
    ("check=4&status=ok", b" 400 "),  # node01 has 4 checks: no 5th result to record
    ("check=99999999999999999999&status=ok", b" 400 "),
    ("check=-1&status=ok", b" 400 "),
    ("check=%D9%A3&status=ok", b" 400 "),  # an Arabic-Indic 3: isdigit(), not an index
    ("check=0&status=passed", b" 400 "),
    ("check=0&status=ok&message=%1B%5B2J", b" 400 "),  # a terminal escape
    ("check=0&status=ok&message=" + "x" * 5000, b" 200 "),  # kept, cut to its limit
])
def test_a_forged_check_report_is_refused_or_bounded(tmp_path: Path, body: str,
                                                       status: bytes) -> None:
    events: list[BootEvent] = []
    limits = Limits(stage_message_text=100)

    async def main() -> bytes:
        async with served(tmp_path, events, limits=limits) as port:
            return await asyncio.to_thread(_post, port, body)

    answer = asyncio.run(main())
    assert status in answer.split(b"\r\n")[0] + b" ", answer
    if status == b" 200 ":
        assert [len(e.detail["message"]) for e in events] == [limits.stage_message_text]
    else:
        assert events == []


def test_only_inventory_addresses_read_or_report_checks(tmp_path: Path) -> None:
    events: list[BootEvent] = []

    async def main() -> tuple[bytes, bytes, bytes]:
        async with served(tmp_path, events) as port:
            own = await asyncio.to_thread(_get_checks, port, source="127.0.0.1")
            other = await asyncio.to_thread(_get_checks, port, source="127.0.0.2")
            forged = await asyncio.to_thread(_post, port, "check=0&status=ok",
                                             source="127.0.0.2")
            return own, other, forged

    started = time.monotonic()
    own, other, forged = asyncio.run(main())
    assert own.split(b"\r\n")[0].endswith(b" 200 OK")
    assert own.partition(b"\r\n\r\n")[2].decode().splitlines() == [
        f"0\tpath\t{tmp_path}/here", f"1\tpath\t{tmp_path}/missing",
        "2\tcommand\ttest $((6*7)) -eq 42", f"3\tcommand\t{NOISY}"]
    assert b" 403 " in other.split(b"\r\n")[0] and b" 403 " in forged.split(b"\r\n")[0]
    assert events == []
    assert time.monotonic() - started < 60


def test_a_node_without_checks_reports_its_runlevel_only(tmp_path: Path) -> None:
    events: list[BootEvent] = []
    inv = make_inventory(nodes=[make_node(1, address="127.0.0.1")],
                         settings=loopback_settings(tmp_path))
    cat = BootCatalog(resolve_cluster(inv))

    async def main() -> None:
        port = free_port()
        service = HttpService(bind="127.0.0.1", port=port, boot_dir=tmp_path,
                              catalog=lambda: cat, on_event=events.append, status=dict)
        await service.start()
        try:
            await run_reporter(tmp_path, port)
        finally:
            await service.close()

    asyncio.run(main())
    assert [(e.kind, e.stage) for e in events] == [("stage", "runlevel")]


def _get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    return answer


def test_a_report_sent_again_is_answered_and_recorded_once(tmp_path: Path) -> None:
    """Nodes send a report again when its answer did not come (the server may have it): the
    same report right after itself is a 200 and no second event; a different one, the same one
    after another, or after the node fetched its boot script (a new boot), is recorded."""
    events: list[BootEvent] = []
    script = next(path for path, (_, kind) in catalog(tmp_path)._virtual_names.items()
                  if kind == "ipxe")

    async def main() -> list[bytes]:
        async with served(tmp_path, events) as port:
            answers = []
            for body in ("stage=dhcp&status=ok&message=10.0.0.5",
                         "stage=dhcp&status=ok&message=10.0.0.5",  # again: a retry
                         "check=0&status=ok", "check=0&status=ok",  # a check result, again
                         "stage=dhcp&status=ok&message=10.0.0.5",  # after another: news
                         "stage=layers&status=ok", "stage=layers&status=failed",
                         "GET", "stage=layers&status=failed"):  # a new boot in between
                if body == "GET":
                    assert b" 200 " in await asyncio.to_thread(_get, port, f"/boot/{script}")
                    continue
                answers.append(await asyncio.to_thread(_post, port, body))
            return answers

    answers = asyncio.run(main())
    assert all(b" 200 " in a.split(b"\r\n")[0] for a in answers), answers
    assert [(e.kind, e.stage, e.detail.get("status")) for e in events
            if e.kind in ("stage", CHECK_EVENT)] == [
        ("stage", "dhcp", "ok"), (CHECK_EVENT, None, "ok"), ("stage", "dhcp", "ok"),
        ("stage", "layers", "ok"), ("stage", "failed", "failed"),
        ("stage", "failed", "failed")]
