"""The `root=` corpus format shared by the Python parser's and the initramfs parser's tests.

A corpus file is blocks separated by blank lines; `#` lines are comments. Every line is a
key padded to 7 columns, then its value, so a caret lines up under the spec above it::

    spec:  10.0.0.1:/:ro;10.0.0.1:/var/state/systems/node01;rw
    layer: top nfs rw 10.0.0.1:/var/state/systems/node01 -
    layer: bottom nfs ro 10.0.0.1:/ -

    spec:  10.0.0.1:/var;tmpfs;ro
    error: tmpfs cannot be read-only
    caret:                   ^^
    hint:  a tmpfs is always the writable top; drop 'ro'

A valid case lists `canon:` (the canonical text, only when it differs from the spec) and one
`layer:` line per layer top to bottom (`LayerRow.line()`); an invalid case lists `error:`,
`caret:` and `hint:`. Pure text in, values out: the tests do the file IO.
"""

from __future__ import annotations

from dataclasses import dataclass

from oneroot.errors import RootSpecError
from oneroot.rootspec.parser import parse
from oneroot.rootspec.spec import describe, format_spec

KEY_WIDTH = 7


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    spec: str
    expected: tuple[str, ...]  # the block's lines after `spec:`, keys included
    line: int  # 1-based line of `spec:` in the file
    comments: tuple[str, ...] = ()  # comment lines just above the block


def field(key: str, value: str) -> str:
    return f"{key}:".ljust(KEY_WIDTH) + value


def outcome(spec: str) -> tuple[str, ...]:
    """What the corpus expects for `spec`, according to the Python parser."""
    try:
        parsed = parse(spec)
    except RootSpecError as error:
        caret_line = error.caret.split("\n")[-1]
        return (field("error", error.message), field("caret", caret_line),
                field("hint", error.hint or ""))
    lines: list[str] = []
    canonical = format_spec(parsed)
    if canonical != spec:
        lines.append(field("canon", canonical))
    lines.extend(field("layer", row.line()) for row in describe(parsed))
    return tuple(lines)


def load(text: str) -> list[Case]:
    cases: list[Case] = []
    comments: list[str] = []
    block: list[tuple[int, str]] = []

    def flush() -> None:
        if block:
            number, first = block[0]
            if not first.startswith("spec:"):
                raise ValueError(f"line {number}: a block starts with 'spec:'")
            cases.append(Case(spec=first[KEY_WIDTH:], expected=tuple(b for _, b in block[1:]),
                              line=number, comments=tuple(comments)))
            comments.clear()
            block.clear()

    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip() == "":
            flush()
        elif line.startswith("#"):
            flush()
            comments.append(line)
        else:
            block.append((number, line))
    flush()
    return cases


def dump(cases: list[Case]) -> str:
    """The corpus text with every expectation recomputed (`ONEROOT_REGEN=1` in the tests)."""
    blocks = ["\n".join([*case.comments, field("spec", case.spec), *outcome(case.spec)])
              for case in cases]
    return "\n\n".join(blocks) + "\n"
