"""The check keys (`check_units`, `check_paths`, `check_commands`) through the CLI on a real
SQLite inventory: set on a group and a node, shown with their provenance, exported to YAML and
applied back unchanged; bad values are one `error:` + `hint:` and write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oneroot.cli.main import main
from oneroot.model.checks import MAX_CHECKS, MAX_COMMAND, CheckKind
from oneroot.model.profile import Profile, check_profile_value


def run(home: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A home with node01 in the default group."""
    h = tmp_path / "home"
    for args in (("init", "--server", "10.0.0.1", "--image-root", str(tmp_path)),
                 ("node", "add", "node01", "--mac", "52:54:00:00:00:01")):
        assert run(h, *args, capsys=capsys)[0] == 0
    return h


def dump(home: Path) -> str:
    return (home / "inventory.db").read_bytes().hex()

COMMAND = 'test "$(cat /etc/hostname)" != localhost, and grep -q a /b'  # a comma, quotes


def test_group_and_node_checks_with_provenance_and_yaml_round_trip(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(home, "group", "set", "default", "--set", "check_units=ssh.service,nfs@x.mount",
               "--set", "check_paths=/usr/bin/true", "--set", f"check_commands={COMMAND}",
               capsys=capsys)[0] == 0
    assert run(home, "node", "set", "node01", "--set",
               'check_commands=["true", "test -d /run"]', capsys=capsys)[0] == 0
    code, out, _ = run(home, "node", "show", "node01", "--json", capsys=capsys)
    values = json.loads(out)["values"]
    assert values["check_units"] == {"value": ["ssh.service", "nfs@x.mount"],
                                     "from": "group:default"}
    assert values["check_paths"] == {"value": ["/usr/bin/true"], "from": "group:default"}
    assert values["check_commands"] == {"value": [COMMAND, "true", "test -d /run"],
                                        "from": "group:default+node"}
    code, out, _ = run(home, "node", "show", "node01", capsys=capsys)
    assert code == 0 and "group:default+node" in out and '"true"' in out  # items quoted

    code, exported, _ = run(home, "inventory", "export", capsys=capsys)
    assert code == 0 and "check_commands:" in exported
    path = home.parent / "cluster.yaml"
    path.write_text(exported)
    before = dump(home)
    code, out, _ = run(home, "inventory", "apply", str(path), capsys=capsys)
    assert code == 0 and "no changes" in out and dump(home) == before


BAD = [
    ("check_units=-H,ssh.service", "is not a unit name", "ssh.service"),
    ("check_units=a b", "is not a unit name", "ssh.service"),
    ("check_paths=relative/path", "is not an absolute path", "/usr/bin/slurmd"),
    ("check_paths=/a b", "is not an absolute path", "check_commands"),
    ("check_commands=true\x1b[2J", "control character", "printable"),
    ("check_commands=[\"true\", 3]", "must be a list of text", "check_commands"),
    ("check_commands=[\"true\"", "is not a JSON list", "e.g."),
    ("check_commands=" + "x" * (MAX_COMMAND + 1), f"more than {MAX_COMMAND}", "script"),
    ("check_paths=" + ",".join(f"/p{i}" for i in range(MAX_CHECKS + 1)),
     f"more than {MAX_CHECKS}", "fold"),
]


@pytest.mark.parametrize(("pair", "message", "hint"), BAD, ids=[b[1] for b in BAD])
def test_a_bad_check_is_one_error_with_a_hint_and_writes_nothing(
        home: Path, capsys: pytest.CaptureFixture[str], pair: str, message: str,
        hint: str) -> None:
    before = dump(home)
    code, _, err = run(home, "group", "set", "default", "--set", pair, capsys=capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 2, err
    assert lines[0].startswith("error: ") and message in lines[0], err
    assert lines[1].startswith("hint: ") and hint in lines[1], err
    assert dump(home) == before


def test_checks_are_numbered_units_paths_commands() -> None:
    p = Profile.from_values({"check_commands": ("false",), "check_units": "a.service",
                             "check_paths": ("/x",)})
    assert [(c.kind, c.target) for c in p.checks] == [
        (CheckKind.UNIT, "a.service"), (CheckKind.PATH, "/x"), (CheckKind.COMMAND, "false")]
    assert check_profile_value("check_commands", "") == ()
    assert check_profile_value("check_commands", "a, b") == ("a, b",)  # one command
