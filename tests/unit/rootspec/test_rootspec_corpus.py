"""Run tests/data/rootspec/cases.txt against the Python parser (the sh twin runs it too)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from oneroot.rootspec import corpus, format_spec, parse

CASES_FILE = Path(__file__).parents[2] / "data" / "rootspec" / "cases.txt"
CASES = corpus.load(CASES_FILE.read_text())


def test_corpus_file_is_its_regenerated_form(request: pytest.FixtureRequest) -> None:
    """The committed file is exactly what `corpus.dump` writes: every expectation is the
    parser's outcome, and the file is never edited by hand. `ONEROOT_REGEN=1 pytest
    tests/unit/rootspec` (or `--update-goldens`) rewrites it, then this compares again."""
    regenerated = corpus.dump(CASES)
    if (os.environ.get("ONEROOT_REGEN") == "1"
            or request.config.getoption("--update-goldens")):
        CASES_FILE.write_text(regenerated)
    assert CASES_FILE.read_text() == regenerated, (
        "tests/data/rootspec/cases.txt differs from its regenerated form: "
        "ONEROOT_REGEN=1 pytest tests/unit/rootspec, then review the diff")


def test_corpus_is_big_enough() -> None:
    valid = [c for c in CASES if not c.expected[0].startswith("error:")]
    invalid = [c for c in CASES if c.expected[0].startswith("error:")]
    assert len(valid) >= 25
    assert len(invalid) >= 20
    specs = [c.spec for c in CASES]
    assert len(specs) == len(set(specs)), "duplicate spec in the corpus"


@pytest.mark.parametrize("case", CASES, ids=[f"line{c.line}" for c in CASES])
def test_case(case: corpus.Case) -> None:
    assert corpus.outcome(case.spec) == case.expected


@pytest.mark.parametrize(
    "seed",
    [
        "10.0.0.1:/:ro;10.0.0.1:/var/state/systems/node01;rw",
        "10.0.0.1:/:ro;10.0.0.1:/var/state/systems/node01;ro;tmpfs",
    ],
)
def test_seed_lines_are_their_own_canonical_form(seed: str) -> None:
    assert format_spec(parse(seed)) == seed
    assert any(c.spec == seed for c in CASES)


def test_load_rejects_a_block_without_spec() -> None:
    with pytest.raises(ValueError, match="line 1"):
        corpus.load("layer: top nfs rw a:/ -\n")
