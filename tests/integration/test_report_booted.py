"""The booted image's stage reporter (overlay/identity.py REPORT_SCRIPT) run by bash against a
real listener, with the kernel command line it reads bind-mounted in a mount namespace."""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from oneroot.overlay.identity import REPORT_SCRIPT

pytestmark = pytest.mark.integration


OK = b"HTTP/1.0 200 OK\r\n\r\nok\n"


def report(tmp_path: Path, *args: str) -> dict[str, list[str]] | None:
    """Run the script with `args`; the form it POSTed, or None if it sent nothing."""
    got = posts(tmp_path, *args)
    if not got:
        return None
    assert len(got) == 1, got
    return got[0]


def posts(tmp_path: Path, *args: str, answers: tuple[bytes, ...] = (OK,)
          ) -> list[dict[str, list[str]]]:
    """Run the script with `args`; the forms it POSTed, in order. The Nth POST is answered
    `answers[N]` (the last one past the end; b"": the connection closed without an answer).
    A GET (the node's checks, asked before `runlevel`) is answered 404: a server without
    checks."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    got: list[bytes] = []
    finished = threading.Event()  # the script has exited: no report can come after that

    def serve() -> None:
        while True:  # not a fixed window: a loaded machine ran the script for over 3 s
            # Read before the accept: once the script has exited, its connection (if any) is
            # in the backlog, so this accept gets it (read after, one could be left there).
            exited = finished.is_set()
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                if exited:
                    return
                continue
            with conn:
                conn.settimeout(30)
                data = b""
                while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < int(
                        data.partition(b"Content-Length: ")[2].split(b"\r\n")[0] or 0):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(b"GET "):
                    conn.sendall(b"HTTP/1.0 404 Not Found\r\n\r\nnot found\n")
                    continue
                got.append(data)
                conn.sendall(answers[min(len(got), len(answers)) - 1])

    thread = threading.Thread(target=serve)
    thread.start()
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(f"ip=dhcp oneroot.status=http://127.0.0.1:{port}/api/v1/report quiet\n")
    script = tmp_path / "report-booted"
    script.write_text(REPORT_SCRIPT)
    script.chmod(0o755)
    subprocess.run(["unshare", "--mount", "sh", "-c",
                    f'mount --bind "{cmdline}" /proc/cmdline && exec "{script}" "$@"', "-",
                    *args], check=True, timeout=60)
    finished.set()
    thread.join()
    listener.close()
    forms = []
    for data in got:
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"POST /api/v1/report HTTP/1.0")
        forms.append(parse_qs(body.decode()))
    return forms


def test_init_and_runlevel_are_reported_with_their_message(tmp_path: Path) -> None:
    assert report(tmp_path, "init", "systemd") == {
        "stage": ["init"], "status": ["ok"], "message": ["systemd"]}
    assert report(tmp_path, "runlevel", "multi-user.target") == {
        "stage": ["runlevel"], "status": ["ok"], "message": ["multi-user.target"]}


def test_a_message_cannot_add_form_fields_and_other_stages_are_not_sent(
        tmp_path: Path) -> None:
    sent = report(tmp_path, "runlevel", "x&stage=failed&status=failed")
    assert sent is not None and sent["stage"] == ["runlevel"] and sent["status"] == ["ok"]
    assert report(tmp_path, "failed", "boom") is None


def test_a_report_without_an_answer_is_sent_again_and_a_refusal_is_final(
        tmp_path: Path) -> None:
    """No answer (the server restarting, a lost reply): the same report again, up to 3 tries;
    an answer, even 403, ends it (the server records a repeat once: test_node_checks)."""
    want = {"stage": ["init"], "status": ["ok"], "message": ["systemd"]}
    assert posts(tmp_path, "init", "systemd", answers=(b"", b"", OK)) == [want] * 3
    assert posts(tmp_path, "init", "systemd", answers=(b"",)) == [want] * 3  # then it gives up
    assert posts(tmp_path, "init", "systemd",
                 answers=(b"HTTP/1.0 403 Forbidden\r\n\r\nunknown node address\n",)) == [want]
