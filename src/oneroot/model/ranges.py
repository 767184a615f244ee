"""Host-name ranges: `node[01-64]`, `n[1-3,7]`, `rack[1-2]-n[01-04]` (pure)."""

from __future__ import annotations

import itertools
import re

from oneroot.errors import InvalidValue

_BRACKET = re.compile(r"\[([^\]]*)\]")


def _expand_part(body: str, text: str) -> list[str]:
    out: list[str] = []
    for item in body.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item.strip())
        if not m:
            raise InvalidValue(f"bad range {item!r} in {text!r}",
                               hint="write ranges like node[01-64] or node[1-4,7]")
        start, end = m.group(1), m.group(2) or m.group(1)
        if int(end) < int(start):
            raise InvalidValue(f"range {item!r} in {text!r} runs backwards")
        width = len(start) if start.startswith("0") else 1
        out.extend(f"{i:0{width}d}" for i in range(int(start), int(end) + 1))
    return out


def expand_names(text: str, *, limit: int = 65536) -> list[str]:
    """Expand every `[...]` group; the last bracket varies fastest."""
    parts = _BRACKET.split(text)
    if "[" in text.replace("[", "", 0) and len(parts) == 1:
        raise InvalidValue(f"unclosed '[' in {text!r}", hint="write ranges like node[01-64]")
    literals, ranges = parts[0::2], parts[1::2]
    if any("[" in lit or "]" in lit for lit in literals):
        raise InvalidValue(f"unbalanced brackets in {text!r}", hint="write ranges like node[01-64]")
    choices = [_expand_part(body, text) for body in ranges]
    total = 1
    for c in choices:
        total *= len(c)
    if total > limit:
        raise InvalidValue(f"{text!r} expands to {total} names, more than {limit}")
    names = []
    for combo in itertools.product(*choices):
        name = literals[0]
        for value, literal in zip(combo, literals[1:], strict=True):
            name += value + literal
        names.append(name)
    if len(set(names)) != len(names):
        raise InvalidValue(f"{text!r} names the same node twice")
    return names
