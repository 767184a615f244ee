"""Suite-wide rules: with CI=true a skipped test fails the run; e2e results are counted;
markers match folders (tests/integration/* is `integration`, tests/e2e/* is `e2e`, and a
test marked for another folder than its own fails); a test that uses the session's Ceph
(`ceph_cluster`, directly or through another fixture) is marked `ceph`, so that scripts/test
runs every such test in one stage, with one Ceph."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

# The session's throwaway Ceph (mon, mgr, OSD, MDS, CephFS): started once, if a test asks.
from oneroot.testing.ceph import CEPH_FIXTURE, ceph_cluster  # noqa: F401

# The session's throwaway PostgreSQL, and `store_at`, which runs a test on SQLite and on it.
from oneroot.testing.postgres import postgres_server, store_at  # noqa: F401


def pytest_addoption(parser: pytest.Parser) -> None:
    with contextlib.suppress(ValueError):
        parser.addoption(
            "--update-goldens", action="store_true", default=False,
            help="rewrite tests/data/golden/* from the renderers instead of comparing",
        )


TESTS = Path(__file__).resolve().parent
# The folder under tests/ that holds each folder-bound marker's tests.
FOLDER_MARKERS = {"integration": "integration", "e2e": "e2e"}


def folder_marker(path: Path) -> str | None:
    """The marker the folder of test file `path` gives its tests (None: tests/unit)."""
    try:
        folder = path.resolve().relative_to(TESTS).parts[0]
    except (ValueError, IndexError):
        return None
    return FOLDER_MARKERS.get(folder)


def wrong_markers(path: Path, marked: set[str]) -> set[str]:
    """The folder-bound markers among `marked` that `path`'s folder does not give."""
    return (marked & set(FOLDER_MARKERS)) - {folder_marker(path)}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        marker = folder_marker(item.path)
        if marker is not None:
            item.add_marker(marker)
        if uses_ceph(item):
            item.add_marker("ceph")


def uses_ceph(item: pytest.Item) -> bool:
    """Whether `item` needs the session's Ceph: `ceph_cluster` is among its fixtures, asked
    for directly or by a fixture it uses (a module's VM on the Ceph network, say)."""
    return CEPH_FIXTURE in getattr(item, "fixturenames", ())


def pytest_runtest_setup(item: pytest.Item) -> None:
    marked = {m.name for m in item.iter_markers()}
    wrong = wrong_markers(item.path, marked)
    if wrong:
        pytest.fail(f"{item.nodeid} is marked {', '.join(sorted(wrong))} but lives in "
                    f"{item.path.parent.relative_to(TESTS)}: move it to tests/"
                    f"{'/'.join(sorted(wrong))}/ or drop the marker", pytrace=False)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    stats = terminalreporter.stats
    e2e_passed = sum(1 for r in stats.get("passed", []) if "e2e" in r.keywords)
    e2e_failed = sum(1 for r in stats.get("failed", []) if "e2e" in r.keywords)
    if e2e_passed or e2e_failed:
        terminalreporter.write_line(f"e2e: {e2e_passed} passed, {e2e_failed} failed")
    skipped = stats.get("skipped", [])
    if os.environ.get("CI") == "true" and skipped:
        terminalreporter.write_line(
            f"CI=true: {len(skipped)} skipped test(s) count as failures (a missing tool is an "
            "install step to add, not a reason to skip)", red=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or os.environ.get("CI") != "true":
        return
    if reporter.stats.get("skipped") and session.exitstatus == 0:
        session.exitstatus = 1
