"""Reading a rendered ganesha.conf in tests: its EXPORT blocks."""

from __future__ import annotations

import re


def exports(text: str) -> dict[str, tuple[str, str]]:
    """Pseudo -> (Path, clients) of each EXPORT block."""
    out: dict[str, tuple[str, str]] = {}
    for block in re.findall(r"EXPORT \{(.*?)\n\}", text, re.DOTALL):
        path = re.search(r'Path = "([^"]+)"', block)
        pseudo = re.search(r'Pseudo = "([^"]+)"', block)
        clients = re.search(r"Clients = ([^;]+);", block)
        if not (path and pseudo and clients):
            raise AssertionError(f"EXPORT block without Path, Pseudo or Clients:{block}")
        out[pseudo.group(1)] = (path.group(1), clients.group(1))
    return out
