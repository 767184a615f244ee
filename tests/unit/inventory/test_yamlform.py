"""The YAML form: export then import gives the same inventory and the same bytes; bad files
fail with one message that names the object, never a traceback."""

from __future__ import annotations

import pytest

from oneroot.errors import InvalidValue
from oneroot.inventory.yamlform import from_yaml, to_yaml
from oneroot.model.inventory import Inventory
from oneroot.net import MacAddress


def test_round_trip(full: Inventory) -> None:
    text = to_yaml(full)
    assert text.startswith("# oneroot inventory")
    assert from_yaml(text) == full
    assert to_yaml(from_yaml(text)) == text


def test_the_same_inventory_gives_the_same_bytes(full: Inventory) -> None:
    shuffled = full.replace(nodes=dict(reversed(list(full.nodes.items()))),
                            groups=dict(reversed(list(full.groups.items()))))
    assert list(shuffled.nodes) != list(full.nodes)
    assert to_yaml(shuffled) == to_yaml(full)


def test_macs_stay_text() -> None:
    """YAML 1.1 would read an unquoted 52:54:00:00:00:05 as a base-60 integer."""
    inv = from_yaml("nodes:\n  n1:\n    mac: 52:54:00:00:00:05\n    ip: 10.0.0.11\n"
                    "  n2:\n    mac: [52:54:00:00:00:06, 52:54:00:00:01:06]\n    ip: 10.0.0.12\n")
    assert inv.nodes["n1"].macs == (MacAddress.parse("52:54:00:00:00:05"),)
    assert len(inv.nodes["n2"].macs) == 2
    assert inv.nodes["n1"].groups == ("default",)  # the default when none are named


def test_integers_are_still_integers() -> None:
    assert from_yaml("settings:\n  http_port: 8081\n").settings.http_port == 8081


@pytest.mark.parametrize(("text", "message"), [
    ("nodes: [\n", r"not valid YAML at line 2"),
    ("clusters: {}\n", r"unknown section 'clusters'"),
    ("nodes: [a, b]\n", r"inventory file: nodes must be a mapping"),
    ("nodes:\n  n1: [a]\n", r"inventory file: node n1 must be a mapping"),
    ("settings:\n  server_address: 10.0.0.999\n", r"inventory file: settings: "),
    ("settings:\n  colour: blue\n", r"settings: unknown setting 'colour'"),
    ("runlevels:\n  r1:\n    services: slurmd\n", r"runlevel r1: services must be a list"),
    ("images:\n  i1:\n    init_system: upstart\n", r"image i1: init system must be"),
    ("groups:\n  g1:\n    colour: blue\n", r"group g1: unknown setting 'colour'"),
    ("nodes:\n  n1:\n    mac: 52:54:00:00:00\n    ip: 10.0.0.11\n", r"node n1: "),
    ("nodes:\n  n1:\n    mac: 52:54:00:00:00:01\n", r"node n1: "),
    ("nodes:\n  n1:\n    mac: 52:54:00:00:00:01\n    ip: 10.0.0.11\n    set: {union: both}\n",
     r"node n1: "),
])
def test_bad_files_name_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidValue, match=message) as caught:
        from_yaml(text, source="inventory file")
    assert caught.value.message.startswith("inventory file")


def test_an_empty_file_is_an_empty_inventory() -> None:
    assert from_yaml("") == Inventory()
