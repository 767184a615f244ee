"""The rules tests/conftest.py enforces, run on a small suite of their own; and the test tree's
import rule: helpers come from `oneroot.testing`, never from a sibling file of the tests."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
INI = """[pytest]
addopts = -p no:cacheprovider -p no:hypothesispytest --strict-markers
markers =
    integration: x
    e2e: x
    ceph: x
"""
FILES = {
    "unit/test_u.py": """
        import pytest

        def test_plain():
            pass

        @pytest.mark.integration
        def test_marked_for_another_folder():
            pass
    """,
    "integration/test_i.py": """
        def test_unmarked_in_integration():
            pass
    """,
    "e2e/test_e.py": """
        def test_unmarked_in_e2e():
            pass
    """,
}


def _suite(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "tests").mkdir()
    shutil.copy(TESTS / "conftest.py", tmp_path / "tests" / "conftest.py")
    for name, text in files.items():
        path = tmp_path / "tests" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


def _pytest(root: Path, *args: str, ci: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": "true"} if ci else {})
    return subprocess.run([sys.executable, "-m", "pytest", "-rA", *args, "tests"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_folders_give_markers_and_a_misplaced_marker_fails(tmp_path: Path) -> None:
    root = _suite(tmp_path, FILES)
    chosen = _pytest(root, "-m", "integration")
    assert "PASSED tests/integration/test_i.py::test_unmarked_in_integration" in chosen.stdout
    assert "ERROR tests/unit/test_u.py::test_marked_for_another_folder" in chosen.stdout
    assert "lives in unit: move it to tests/integration/" in chosen.stdout
    assert "test_unmarked_in_e2e" not in chosen.stdout and "test_plain" not in chosen.stdout
    assert chosen.returncode == 1
    not_e2e = _pytest(root, "-m", "not e2e")
    assert "PASSED tests/unit/test_u.py::test_plain" in not_e2e.stdout
    assert "test_unmarked_in_e2e" not in not_e2e.stdout
    e2e = _pytest(root, "-m", "e2e")
    assert "PASSED tests/e2e/test_e.py::test_unmarked_in_e2e" in e2e.stdout
    assert e2e.returncode == 0, e2e.stdout


def test_the_tests_on_the_sessions_ceph_are_marked_for_their_stage(tmp_path: Path) -> None:
    # scripts/test runs `-m ceph` in a stage of its own (one Ceph for all of them) and leaves
    # them out of the others: a test that asks for `ceph_cluster` through a fixture of its
    # module counts too. Collected only: nothing here starts a Ceph.
    root = _suite(tmp_path, {
        "integration/test_c.py": """
            def test_direct(ceph_cluster):
                pass

            def test_no_ceph():
                pass
        """,
        "e2e/test_v.py": """
            import pytest

            @pytest.fixture(scope="module")
            def vm(ceph_cluster):
                return ceph_cluster

            def test_through_a_fixture(vm):
                pass
        """})
    ceph = _pytest(root, "-m", "ceph", "--collect-only", "-q")
    assert ceph.stdout.splitlines()[:2] == ["tests/e2e/test_v.py::test_through_a_fixture",
                                            "tests/integration/test_c.py::test_direct"], ceph
    rest = _pytest(root, "-m", "not ceph", "--collect-only", "-q")
    assert rest.stdout.splitlines()[:1] == ["tests/integration/test_c.py::test_no_ceph"], rest


def test_a_skip_fails_the_run_with_ci_true(tmp_path: Path) -> None:
    root = _suite(tmp_path, {"unit/test_s.py": """
        import pytest

        def test_skipped():
            pytest.skip("a missing tool")
    """})
    assert _pytest(root).returncode == 0
    ci = _pytest(root, ci=True)
    assert ci.returncode == 1 and "count as failures" in ci.stdout, ci.stdout


def _sibling_imports(path: Path, local: set[str]) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) and node.module
                 and node.level == 0 else [])
        found += [f"{path.name}:{node.lineno}: {name}" for name in names
                  if name.split(".")[0] in local]
    return found


def test_tests_import_helpers_from_oneroot_testing() -> None:
    files = sorted(TESTS.rglob("*.py"))
    local = {p.stem for p in files}
    bad = [hit for path in files for hit in _sibling_imports(path, local)]
    bad += [f"{p.relative_to(TESTS)}: sys.path" for p in files
            if p != Path(__file__) and "sys.path" in p.read_text()]
    assert not bad, "import test helpers from oneroot.testing, not from files in tests/:\n" + \
        "\n".join(bad)


@pytest.mark.parametrize("code", ["import conftest\n", "from render_example import X\n"])
def test_the_import_check_catches_a_violation(tmp_path: Path, code: str) -> None:
    bad = tmp_path / "test_bad.py"
    bad.write_text(code)
    assert _sibling_imports(bad, {"conftest", "render_example"})


def test_test_module_names_are_unique() -> None:
    """pytest imports test modules by basename (rootdir-relative, no packages): two
    `test_x.py` in different folders stop the whole run at collection."""
    seen: dict[str, Path] = {}
    clashes = []
    for path in sorted(TESTS.rglob("test_*.py")):
        if path.name in seen:
            clashes.append(f"{seen[path.name].relative_to(TESTS)} and {path.relative_to(TESTS)}")
        seen.setdefault(path.name, path)
    assert not clashes, "rename one of each pair:\n" + "\n".join(clashes)


def _own_caches(path: Path) -> list[str]:
    """Lines of `path` that pick a download/image cache of their own."""
    return [f"{path.name}:{n}: {line.strip()}"
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if "default_cache_dir(" in line or "/var/cache/oneroot" in line
            or "ONEROOT_TEST_CACHE" in line]


def test_one_cache_for_the_whole_suite() -> None:
    """Kernels, busybox and mmdebstrap images go to `oneroot.testing.cache.suite_cache_dir()`:
    a test with its own cache (test_image_create had /var/cache/oneroot-test while the lab
    used ~/.cache/oneroot) makes CI build the same image twice."""
    helpers = Path(__file__).resolve().parents[2] / "src" / "oneroot" / "testing"
    files = [p for p in [*TESTS.rglob("*.py"), *helpers.glob("*.py")]
             if p != Path(__file__) and p.name != "cache.py"]
    bad = [hit for path in sorted(files) for hit in _own_caches(path)]
    assert not bad, "use oneroot.testing.cache.suite_cache_dir():\n" + "\n".join(bad)


def test_the_cache_check_catches_a_second_cache(tmp_path: Path) -> None:
    bad = tmp_path / "test_bad.py"
    bad.write_text('CACHE = Path("/var/cache/oneroot-test")\nk = fetch(default_cache_dir())\n')
    assert len(_own_caches(bad)) == 2
