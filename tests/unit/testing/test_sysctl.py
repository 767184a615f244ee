"""`oneroot.testing.sysctl` on files of the test's own: a value is only raised, put back after
the block, and left as it is when another run changed it meanwhile."""

from __future__ import annotations

from pathlib import Path

from oneroot.testing.sysctl import raised_sysctls


def test_raised_then_put_back(tmp_path: Path) -> None:
    (tmp_path / "low").write_text("1000\n")
    (tmp_path / "high").write_text("5000\n")
    with raised_sysctls({"low": 2000, "high": 2000}, base=tmp_path):
        assert (tmp_path / "low").read_text() == "2000\n"
        assert (tmp_path / "high").read_text() == "5000\n"  # never lowered
    assert (tmp_path / "low").read_text() == "1000\n"
    assert (tmp_path / "high").read_text() == "5000\n"


def test_a_value_another_run_raised_meanwhile_is_kept(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("1000\n")
    with raised_sysctls({"x": 2000}, base=tmp_path):
        (tmp_path / "x").write_text("8000\n")  # a concurrent storm bench at N = 1,000
    assert (tmp_path / "x").read_text() == "8000\n"
