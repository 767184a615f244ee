"""Node-controlled text reaches the terminal as text: no markup, no control characters."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from oneroot.cli.main import main
from oneroot.cli.output import visible
from oneroot.inventory.events import EventStore
from oneroot.model.events import BootEvent

HOSTILE = "[/x] [bold red]boom \x1b]0;owned\x07 \x1b[2J\r\x9b31m tab\tend \u202e \\x1b"


@pytest.mark.parametrize(("raw", "shown"), [
    ("plain text: 10.0.0.1", "plain text: 10.0.0.1"),
    ("[/x]", "[/x]"),
    ("\x1b[31mred", "\\x1b[31mred"),
    ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
    ("a\rb\nc\td", "a\\x0db\\x0ac\\x09d"),
    ("\x9b1m\x7f", "\\x9b1m\\x7f"),
    ("\u202e", "\\u202e"),
    ("back\\slash", "back\\\\slash"),
    (None, ""),
])
def test_visible_shows_controls(raw: str | None, shown: str) -> None:
    assert visible(raw) == shown


def test_status_shows_hostile_message_as_text(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    assert main(["--home", str(home), "init", "--server", "10.0.0.1",
                 "--image-root", str(tmp_path)]) == 0
    assert main(["--home", str(home), "node", "add", "node01", "--mac", "52:54:00:00:00:01",
                 "--ip", "10.0.0.11"]) == 0
    store = EventStore(home / "events.db")
    store.record([BootEvent(time=1.0, kind="stage", node="node01", stage="failed",
                            peer=ipaddress.IPv4Address("10.0.0.11"),
                            detail={"status": "failed", "message": HOSTILE})])
    store.close()
    capsys.readouterr()
    assert main(["--home", str(home), "status"]) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out and "\r" not in out
    assert "[/x] [bold red]boom \\x1b]0;owned\\x07" in out
    assert "Traceback" not in err
