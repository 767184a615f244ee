"""The package's layers (STYLE.md): each imports only those below it.

Fails when, say, `oneroot.proto` imports `oneroot.serve`, or `oneroot.model` imports
`oneroot.inventory`, or when a package imports another of its own rank that `SAME_RANK` does
not list (`nfs` importing `overlay`: both are rank 4, and neither may lean on the other).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "oneroot"

RANK = {
    "errors": 0, "net": 0, "fsutil": 0,
    "model": 1,
    "rootspec": 2,
    "proto": 3, "render": 3,
    "inventory": 4, "initramfs": 4, "nfs": 4, "lab": 4, "overlay": 4, "netpin": 4, "bmc": 4,
    "ops": 5,
    "serve": 6, "cli": 7,
    "__main__": 8,
    # Test and bench helpers: may import anything; nothing in the product imports them.
    "testing": 9,
}
# Imports between two packages of the same rank that are allowed (importer, imported).
SAME_RANK = frozenset({("net", "errors"), ("fsutil", "errors"), ("lab", "netpin")})
# Pure layers must not do IO of their own.
PURE_FORBIDDEN = {"socket", "asyncio", "logging", "time", "sqlite3", "subprocess"}
PURE = {"model", "rootspec", "proto", "render"}


def _part(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "oneroot":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
    return found


def _files() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_every_package_has_a_rank() -> None:
    for path in _files():
        rel = path.relative_to(SRC)
        name = rel.parts[0].removesuffix(".py")
        if name != "__init__":
            assert name in RANK, f"{rel}: add {name!r} to RANK in this test"


def _violations(path: Path, own: str) -> list[str]:
    """What is wrong with the imports of `path`, a module of package `own`."""
    found = []
    for module, line in _imports(path):
        target = _part(module)
        if own in PURE and module.split(".")[0] in PURE_FORBIDDEN:
            found.append(f"{path.name}:{line}: pure layer {own!r} imports {module!r} (no IO)")
        if target is None or target in ("__init__", own):
            continue
        if RANK[target] > RANK[own]:
            found.append(f"{path.name}:{line}: {own!r} (layer {RANK[own]}) imports {module!r} "
                         f"(layer {RANK[target]}): only layers below may be imported")
        elif RANK[target] == RANK[own] and (own, target) not in SAME_RANK:
            found.append(f"{path.name}:{line}: {own!r} imports {module!r} of the same layer "
                         f"({RANK[own]}): not in SAME_RANK")
    return found


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_go_down(path: Path) -> None:
    rel = path.relative_to(SRC)
    own = rel.parts[0].removesuffix(".py")
    if own == "__init__":
        return
    assert _violations(path, own) == []


@pytest.mark.parametrize(("own", "source", "why"), [
    ("proto", "from oneroot.serve.app import run\n", "only layers below"),
    ("nfs", "from oneroot.overlay.layer import LayerDirs\n", "same layer"),
    ("render", "import logging\n", "no IO"),
])
def test_the_check_catches_a_violation(tmp_path: Path, own: str, source: str,
                                       why: str) -> None:
    bad = tmp_path / "x.py"
    bad.write_text(source)
    (found,) = _violations(bad, own)
    assert why in found
    good = tmp_path / "y.py"
    good.write_text("from oneroot.errors import ConfigError\n")
    assert _violations(good, own) == []


DOC = SRC.parents[1] / "docs" / "architecture.md"


def _documented_rows(text: str) -> list[list[str]]:
    """The package names of each row of the doc's layer picture, top row first."""
    block = text.split("## Layers", 1)[1].split("```", 2)[1]
    rows = []
    for line in block.splitlines():
        if line.strip():
            names = line.split("  ", 1)[0]
            rows.append([n.strip() for n in names.split(",")])
    return rows


def test_the_documented_picture_is_the_checked_one() -> None:
    """docs/architecture.md draws RANK: every package once, rows top to bottom, one rank a
    row (STYLE.md's picture once lacked fsutil, bmc, netpin and testing)."""
    rows = _documented_rows(DOC.read_text())
    drawn = [n for row in rows for n in row]
    assert sorted(drawn) == sorted(set(RANK) - {"__main__"})
    ranks = [{RANK[n] for n in row} for row in rows]
    assert all(len(r) == 1 for r in ranks), list(zip(rows, ranks, strict=True))
    flat = [r.pop() for r in ranks]
    assert flat == sorted(flat, reverse=True) and len(set(flat)) == len(flat)


def test_the_picture_check_catches_a_missing_package() -> None:
    rows = _documented_rows("## Layers\n```\ncli   x\nerrors, net  y\n```\n")
    assert rows == [["cli"], ["errors", "net"]]
    assert sorted(n for row in rows for n in row) != sorted(set(RANK) - {"__main__"})
