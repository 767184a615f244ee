"""The initramfs `root=` parser runs the same corpus as oneroot.rootspec, under busybox sh."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oneroot.rootspec import corpus

ROOT = Path(__file__).parents[3]
SCRIPT = ROOT / "src" / "oneroot" / "initramfs" / "modules" / "40-rootspec" / "parse-root.sh"
CASES = corpus.load((ROOT / "tests" / "data" / "rootspec" / "cases.txt").read_text())


@pytest.fixture(scope="module")
def busybox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy: the system busybox may be replaced by a wrapper script."""
    found = shutil.which("busybox") or "/bin/busybox"
    if not Path(found).exists():
        pytest.skip("busybox is not installed")
    private = tmp_path_factory.mktemp("busybox") / "busybox"
    shutil.copy2(found, private)
    return private


def run(busybox: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(busybox), "sh", str(SCRIPT), *args], capture_output=True,
                          text=True, env={"PATH": "/nonexistent", "LC_ALL": "C"}, timeout=30,
                          check=False)


def sh_outcome(busybox: Path, spec: str) -> tuple[str, ...]:
    """The sh parser's answer in corpus lines, for comparison with the Python parser's."""
    printed = run(busybox, "--print", spec)
    if printed.returncode != 0:
        assert printed.returncode == 1, printed.stderr
        assert printed.stdout == ""
        message, text, caret, hint = printed.stderr.removesuffix("\n").split("\n")
        assert text == spec
        return (corpus.field("error", message), corpus.field("caret", caret),
                corpus.field("hint", hint.removeprefix("hint: ")))
    formatted = run(busybox, "--format", spec)
    assert formatted.returncode == 0, formatted.stderr
    canonical = formatted.stdout.removesuffix("\n")
    lines = [corpus.field("canon", canonical)] if canonical != spec else []
    lines += [corpus.field("layer", line) for line in printed.stdout.splitlines()]
    return tuple(lines)


@pytest.mark.parametrize("case", CASES, ids=[f"line{c.line}" for c in CASES])
def test_case(busybox: Path, case: corpus.Case) -> None:
    assert sh_outcome(busybox, case.spec) == case.expected


def test_sourced_interface_sets_variables(busybox: Path) -> None:
    program = (
        f". {SCRIPT}\n"
        "rootspec_parse '[fd00::1]:/:vers=4.2;10.0.0.1:/var/state/systems/node01;ro;"
        "tmpfs:mode=1777,size=1g' || exit 9\n"
        'i=1; while [ "$i" -le "$ROOTSPEC_COUNT" ]; do\n'
        '  eval \'printf "%s|%s|%s|%s|%s\\n" "$ROOTSPEC_\'$i\'_TYPE" "$ROOTSPEC_\'$i\'_SERVER"'
        ' "$ROOTSPEC_\'$i\'_PATH" "$ROOTSPEC_\'$i\'_MODE" "$ROOTSPEC_\'$i\'_OPTS"\'\n'
        "  i=$((i + 1)); done\n"
        'echo "$ROOTSPEC_CANONICAL"\n'
        "rootspec_parse 'a:/;;' 2>/dev/null; echo \"rc=$? count=$ROOTSPEC_COUNT\"\n"
    )
    result = subprocess.run([str(busybox), "sh", "-c", program], capture_output=True, text=True,
                            env={"PATH": "/nonexistent"}, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "nfs|fd00::1|/|ro|vers=4.2",
        "nfs|10.0.0.1|/var/state/systems/node01|ro|",
        "tmpfs|||rw|size=1g,mode=1777",
        "[fd00::1]:/:ro,vers=4.2;10.0.0.1:/var/state/systems/node01;ro;tmpfs:size=1g,mode=1777",
        "rc=1 count=0",
    ]


def test_usage_without_mode(busybox: Path) -> None:
    assert run(busybox).returncode == 2


def test_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck") or "/usr/bin/shellcheck"
    if not Path(shellcheck).exists():
        pytest.skip("shellcheck is not installed")
    result = subprocess.run([shellcheck, "-s", "sh", str(SCRIPT)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


FRAGMENTS = ["10.0.0.1", "nfs.example", "[fd00::1]", "[", "]", ":", "/", "/var", "//", "/..",
             ";", ",", "ro", "rw", "tmpfs", "size=1g", "mode=1777", "vers=3", "soft", "=", "-",
             "300", ".", " ", "%"]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join))
def test_sh_agrees_with_python_on_arbitrary_text(busybox: Path, text: str) -> None:
    assert sh_outcome(busybox, text) == corpus.outcome(text)
