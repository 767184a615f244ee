"""Run tests/data/rootspec/cases.txt against the Python parser (the sh twin runs it too)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from oneroot.rootspec import corpus, format_spec, parse

CASES_FILE = Path(__file__).parents[2] / "data" / "rootspec" / "cases.txt"
CASES = corpus.load(CASES_FILE.read_text())


if os.environ.get("ONEROOT_REGEN") == "1":
    # Collected only when asked, so a normal run (and CI, where a skip fails) never skips it.
    def test_regenerate_when_asked() -> None:
        """`ONEROOT_REGEN=1 pytest tests/unit/rootspec` rewrites the expectations."""
        CASES_FILE.write_text(corpus.dump(CASES))


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
