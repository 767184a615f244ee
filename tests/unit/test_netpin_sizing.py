"""`size_neighbour_table` on sysctl files of the test's own (the machine's are shared with
other runs: tests/integration/test_node_pin.py checks those): the exact thresholds for 3,000
nodes, never lowered, the top raised first, None where the namespace has no such files."""

from __future__ import annotations

from pathlib import Path

from oneroot.netpin import size_neighbour_table


def _files(tmp_path: Path, values: tuple[int, int, int]) -> list[Path]:
    files = [tmp_path / f"gc_thresh{i}" for i in (1, 2, 3)]
    for f, value in zip(files, values, strict=True):
        f.write_text(f"{value}\n")
    return files


def test_sized_for_3000_nodes_and_never_lowered(tmp_path: Path) -> None:
    files = _files(tmp_path, (128, 512, 1024))  # the kernel's defaults
    assert size_neighbour_table(3000, tmp_path) == (3000, 3512, 7024)
    assert [int(f.read_text()) for f in files] == [3000, 3512, 7024]
    assert size_neighbour_table(10, tmp_path) == (3000, 3512, 7024)
    assert [int(f.read_text()) for f in files] == [3000, 3512, 7024]


def test_a_namespace_without_the_files_is_left_alone(tmp_path: Path) -> None:
    assert size_neighbour_table(3000, tmp_path) is None
    assert list(tmp_path.iterdir()) == []
