"""Fixtures for the renderer tests: the example cluster and golden-file comparison.

`pytest --update-goldens` rewrites tests/data/golden/ from the renderers; review the diff.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from oneroot.render import ClusterContext, DefaultBootContext
from oneroot.testing.render_example import GoldenCheck, example_cluster

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "data" / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    # pytest takes options only from conftests it loads at start-up: this one when the tests
    # are named on the command line (`pytest tests/unit/render --update-goldens`). A copy in
    # tests/conftest.py makes a bare `pytest --update-goldens` work too; then this one yields.
    with contextlib.suppress(ValueError):
        parser.addoption(
            "--update-goldens", action="store_true", default=False,
            help="rewrite tests/data/golden/* from the renderers instead of comparing",
        )


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> GoldenCheck:
    """`golden(name, text)`: compare with tests/data/golden/NAME, or rewrite it."""
    update = bool(request.config.getoption("--update-goldens"))

    def check(name: str, text: str) -> None:
        path = GOLDEN_DIR / name
        if update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            return
        assert path.exists(), f"no {path}: run pytest tests/unit/render --update-goldens"
        assert text == path.read_text(), f"{name} differs from its golden file"

    return check


@pytest.fixture
def cluster() -> ClusterContext:
    return example_cluster()


@pytest.fixture
def default_ctx() -> DefaultBootContext:
    return DefaultBootContext(timeout_seconds=5)
