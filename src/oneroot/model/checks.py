"""The checks a group (or node) declares: what must hold once a node reached its runlevel.

Three profile keys, each a list: `check_units` (a unit is active), `check_paths` (a path
exists), `check_commands` (a shell command exits 0). A node fetches its checks from
`oneroot serve` (GET /api/v1/checks, one line per check: `INDEX<TAB>KIND<TAB>TARGET`), runs
them when its runlevel is reached, and reports each result by INDEX (POST /api/v1/report
`check=INDEX&status=ok|failed&message=…`) before it reports `runlevel`. `lab try` and
`image rollout` read the results; the server only takes INDEXes it gave the node.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from oneroot.errors import InvalidValue

MAX_CHECKS = 16  # items per check key (a node runs them all at each boot)
MAX_UNIT = 256  # characters of a unit name (systemd's own limit)
MAX_PATH = 1024  # characters of a checked path
MAX_COMMAND = 1000  # characters of a checked command
COMMAND_SECONDS = 60  # a command check running longer fails (the node's `timeout`)
_UNIT = re.compile(r"^[A-Za-z0-9:_.@\\][A-Za-z0-9:_.@\\-]*$")
CHECK_KEYS = ("check_units", "check_paths", "check_commands")


class CheckKind(enum.StrEnum):
    UNIT = "unit"
    PATH = "path"
    COMMAND = "command"


KIND_OF_KEY = {"check_units": CheckKind.UNIT, "check_paths": CheckKind.PATH,
               "check_commands": CheckKind.COMMAND}


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    kind: CheckKind
    target: str  # the unit, the path or the command

    @property
    def text(self) -> str:
        return f"{self.kind} {self.target}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """A node's answer for one check (`message` is the node's: untrusted, bounded)."""

    index: int
    passed: bool
    message: str = ""


def declared_checks(units: Sequence[str], paths: Sequence[str],
                    commands: Sequence[str]) -> tuple[Check, ...]:
    """The checks in the order they run (and are numbered): units, paths, commands."""
    return (*(Check(kind=CheckKind.UNIT, target=u) for u in units),
            *(Check(kind=CheckKind.PATH, target=p) for p in paths),
            *(Check(kind=CheckKind.COMMAND, target=c) for c in commands))


def checks_text(checks: Sequence[Check]) -> str:
    """The wire form a node reads: `INDEX<TAB>KIND<TAB>TARGET` lines (targets hold no tab or
    newline: `check_items` refused them)."""
    return "".join(f"{i}\t{c.kind}\t{c.target}\n" for i, c in enumerate(checks))


def _items(key: str, value: Any) -> tuple[str, ...]:
    """The items of a check key: a list (YAML, database) or text from `--set`: a JSON list,
    or for commands one command, for units and paths a comma-separated list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise InvalidValue(f"{key} is not a JSON list: {text!r}",
                                   hint='write e.g. ["systemctl is-system-running", '
                                        '"test -s /etc/motd"]') from None
        elif key == "check_commands":
            return (text,) if text else ()
        else:
            return tuple(v for v in (p.strip() for p in text.split(",")) if v)
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)) or not all(
            isinstance(v, str) for v in value):
        raise InvalidValue(f"{key} must be a list of text, not {value!r}",
                           hint=f"e.g. {key}: [...] in YAML, or --set {key}=A,B")
    return tuple(value)


def check_items(key: str, value: Any) -> tuple[str, ...]:
    """Validate one check key's value; a bad item raises `InvalidValue` with a hint."""
    items = _items(key, value)
    if len(items) > MAX_CHECKS:
        raise InvalidValue(f"{key} has {len(items)} items, more than {MAX_CHECKS}",
                           hint="fold several into one check_commands item")
    for item in items:
        if not item.isprintable() or not item.strip():
            raise InvalidValue(f"{key} item {item!r} is empty or holds a control character",
                               hint="give one line of printable text per item")
        if key == "check_units" and (len(item) > MAX_UNIT or not _UNIT.match(item)):
            raise InvalidValue(f"check_units item {item!r} is not a unit name",
                               hint="e.g. ssh.service, nfs-client.target (systemd) or sshd "
                                    "(OpenRC)")
        if key == "check_paths" and (len(item) > MAX_PATH or not item.startswith("/") or any(
                c.isspace() for c in item)):
            raise InvalidValue(f"check_paths item {item!r} is not an absolute path",
                               hint="e.g. /usr/bin/slurmd (no white space; for others use "
                                    "check_commands: test -e '/a b')")
        if key == "check_commands" and len(item) > MAX_COMMAND:
            raise InvalidValue(f"check_commands item of {len(item)} characters, more than "
                               f"{MAX_COMMAND}", hint="put the command in a script in the "
                                                      "image and check that")
    return items
