"""The size limits of STYLE.md / the project brief, over src/oneroot: no module over 600 lines,
no function over 80 lines (from its `def` line to its last line, nested functions included in
their parent's count). Read with `ast`, so strings and comments count as the lines they take."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import oneroot

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
SRC = Path(oneroot.__file__).resolve().parent


def oversized(text: str, name: str) -> list[str]:
    """What in one module's source breaks a limit, one line each."""
    found = []
    lines = len(text.splitlines())
    if lines > MAX_MODULE_LINES:
        found.append(f"{name}: {lines} lines (limit {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(text, filename=name)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{name}:{node.lineno}: {node.name}() has {length} lines "
                             f"(limit {MAX_FUNCTION_LINES})")
    return found


def test_no_module_or_function_of_the_package_is_over_the_limits() -> None:
    modules = sorted(SRC.rglob("*.py"))
    assert len(modules) > 100  # the package, not an empty directory
    found = [problem for path in modules
             for problem in oversized(path.read_text(), str(path.relative_to(SRC)))]
    assert not found, "split these (STYLE.md):\n" + "\n".join(found)


def test_the_check_sees_a_long_function_and_a_long_module() -> None:
    def function(body_lines: int, *, prefix: str = "") -> str:
        body = "".join(f"    x{i} = {i}\n" for i in range(body_lines))
        return f"{prefix}def f():\n{body}"

    assert oversized(function(MAX_FUNCTION_LINES - 1), "ok.py") == []
    assert oversized(function(MAX_FUNCTION_LINES), "long.py") == [
        f"long.py:1: f() has {MAX_FUNCTION_LINES + 1} lines (limit {MAX_FUNCTION_LINES})"]
    nested = "class C:\n" + textwrap.indent(function(MAX_FUNCTION_LINES, prefix="async "), "    ")
    assert [p.split(": ", 1)[1] for p in oversized(nested, "m.py")] == [
        f"f() has {MAX_FUNCTION_LINES + 1} lines (limit {MAX_FUNCTION_LINES})"]
    module = "".join(f"x{i} = {i}\n" for i in range(MAX_MODULE_LINES + 1))
    assert oversized(module, "big.py") == [
        f"big.py: {MAX_MODULE_LINES + 1} lines (limit {MAX_MODULE_LINES})"]
    assert oversized(module[: module.rindex("x")], "edge.py") == []
