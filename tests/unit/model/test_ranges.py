from __future__ import annotations

import pytest

from oneroot.errors import InvalidValue
from oneroot.model.ranges import expand_names


@pytest.mark.parametrize(("text", "names"), [
    ("node01", ["node01"]),
    ("node[01-03]", ["node01", "node02", "node03"]),
    ("n[8-11]", ["n8", "n9", "n10", "n11"]),
    ("n[1,3-4]", ["n1", "n3", "n4"]),
    ("r[1-2]-n[1-2]", ["r1-n1", "r1-n2", "r2-n1", "r2-n2"]),
])
def test_expand(text: str, names: list[str]) -> None:
    assert expand_names(text) == names


@pytest.mark.parametrize("text", ["n[3-1]", "n[a-b]", "n[1-2", "n]1[", "n[1,1]"])
def test_bad_ranges(text: str) -> None:
    with pytest.raises(InvalidValue):
        expand_names(text)
