"""Coverage-guided fuzzing (atheris) of every target for a fixed budget, and proof that the
harness works: with the test-only planted bug switched on, each target must find it in time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
RUN = ROOT / "fuzz" / "run.py"
TARGETS = ["dhcp_codec", "tftp_codec", "dhcp_responder", "tftp_transfer", "http_resolver",
           "rootspec"]
BUDGET = 5  # seconds of fuzzing per target in CI; run longer by hand: fuzz/run.py T --seconds N
PLANT_BUDGET = 60  # the planted bugs are found in 2-20 s here


def fuzz(target: str, seconds: int, artifacts: Path, *,
         plant: bool) -> subprocess.CompletedProcess[str]:
    """Run fuzz/run.py as a user does; its libFuzzer and Python output both end in stderr."""
    env = {**os.environ, "ONEROOT_FUZZ_PLANT": "1" if plant else "0"}
    return subprocess.run([sys.executable, str(RUN), target, f"--seconds={seconds}",
                           f"--artifacts={artifacts}", f"--corpus-out={artifacts / 'new'}"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          timeout=seconds + 120,
                          check=False)


def test_targets_are_the_listed_ones() -> None:
    listed = subprocess.run([sys.executable, str(RUN), "--list"], capture_output=True, text=True,
                            check=True).stdout.split()
    assert sorted(listed) == sorted(TARGETS)


@pytest.mark.parametrize("target", TARGETS)
def test_no_crash_in_budget(target: str, tmp_path: Path) -> None:
    result = fuzz(target, BUDGET, tmp_path, plant=False)
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    assert result.returncode == 0 and not crashes, (
        f"fuzz/run.py {target} found a bug ({crashes}): reproduce with "
        f"`fuzz/run.py {target} --repro FILE`, fix it, add the input to fuzz/corpus/{target}/\n"
        + result.stdout[-4000:])
    runs = next(line for line in result.stdout.splitlines()
                if line.startswith("stat::number_of_executed_units:"))
    assert int(runs.split(":")[-1]) > 1000, runs


@pytest.mark.parametrize("target", TARGETS)
def test_planted_bug_is_found(target: str, tmp_path: Path) -> None:
    result = fuzz(target, PLANT_BUDGET, tmp_path, plant=True)
    assert result.returncode != 0, f"{target}: the planted bug was not found in {PLANT_BUDGET} s"
    assert f"PlantedBug: planted bug reached in {target}" in result.stdout
    assert list(tmp_path.glob("crash-*")), "the crashing input was not saved"


def test_committed_crashes_replay(tmp_path: Path) -> None:
    """Each fixed crash stays in the corpus as a regression case, and passes now."""
    cases = sorted((ROOT / "fuzz" / "corpus").glob("*/crash-*"))
    assert cases
    for case in cases:
        subprocess.run([sys.executable, str(RUN), case.parent.name, f"--repro={case}"],
                       capture_output=True, text=True, check=True, timeout=60)
