"""The console's escape sequence and its server-side log: bounded, rotated, never through a
link."""

from __future__ import annotations

from pathlib import Path

import pytest

from oneroot.errors import ConfigError
from oneroot.ops.console import ConsoleLog, EscapeDetector, tail


@pytest.mark.parametrize(("chunks", "sent", "leave"), [
    ([b"~."], b"", True),  # at the very start of the session
    ([b"ls\r~."], b"ls\r", True),
    ([b"ls\n", b"~", b"."], b"ls\n", True),  # split across reads
    ([b"a~."], b"a~.", False),  # not at the start of a line
    ([b"~~."], b"~.", False),  # ~~ sends one ~, and the line no longer starts there
    ([b"~x"], b"~x", False),
    ([b"\r~\r~."], b"\r~\r", True),
])
def test_escape_sequence(chunks: list[bytes], sent: bytes, leave: bool) -> None:
    escape = EscapeDetector()
    out, left = b"", False
    for chunk in chunks:
        data, left = escape.feed(chunk)
        out += data
        if left:
            break
    assert (out, left) == (sent, leave)


def test_log_appends_and_rotates_at_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "console" / "node01.log"
    with ConsoleLog(path, limit=100) as log:
        log.write(b"a" * 60)
    with ConsoleLog(path, limit=100) as log:  # appended, not truncated
        log.write(b"b" * 100)
    assert path.with_name("node01.log.1").read_bytes() == b"a" * 60 + b"b" * 40
    assert path.read_bytes() == b"b" * 60
    with ConsoleLog(path, limit=100) as log:
        log.write(b"c" * 41)
    assert path.read_bytes() == b"c"  # a full log moves aside; only one older generation
    assert path.with_name("node01.log.1").read_bytes() == b"b" * 60 + b"c" * 40
    assert sorted(p.name for p in path.parent.iterdir()) == ["node01.log", "node01.log.1"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    assert oct(path.parent.stat().st_mode & 0o777) == oct(0o700)


def test_log_is_never_written_through_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    path = tmp_path / "console" / "node01.log"
    path.parent.mkdir()
    path.symlink_to(victim)
    with pytest.raises(ConfigError, match="cannot open the console log"), ConsoleLog(path):
        pass
    with pytest.raises(ConfigError, match="cannot read the console log"):
        tail(path)
    assert victim.read_text() == "keep\n"


def test_tail_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "node01.log"
    path.write_bytes(b"x" * 1000 + b"end")
    assert tail(path, limit=10) == b"x" * 7 + b"end"
    assert tail(tmp_path / "none.log") == b""
