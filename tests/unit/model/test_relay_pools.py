"""Setting `relay_pools`: a pool per relayed segment (`RELAY/PREFIX=FIRST-LAST`), checked as a
whole; bad input is one error line and a hint, and the setting round-trips as text."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from oneroot.cli.main import main
from oneroot.errors import InvalidValue
from oneroot.model.inventory import settings_from_dict, settings_to_dict
from oneroot.model.relaypools import RelayPool, parse_relay_pools

TWO = "10.1.5.1/24=10.1.5.100-10.1.5.199, 10.1.6.1/24=10.1.6.10-10.1.6.20"


def test_entries_are_parsed_and_round_trip() -> None:
    pools = parse_relay_pools(TWO)
    assert pools[0] == RelayPool(relay=IPv4Address("10.1.5.1"),
                                 subnet=IPv4Network("10.1.5.0/24"),
                                 first=IPv4Address("10.1.5.100"),
                                 last=IPv4Address("10.1.5.199"))
    settings = settings_from_dict({"relay_pools": TWO})
    assert settings.relay_pools == pools
    assert settings_from_dict(settings_to_dict(settings)) == settings
    assert parse_relay_pools("") == parse_relay_pools("none") == ()


@pytest.mark.parametrize(("text", "message"), [
    ("10.1.5.1=10.1.5.100-10.1.5.199", "is not RELAY/PREFIX=FIRST-LAST"),
    ("10.1.5.1/24", "is not RELAY/PREFIX=FIRST-LAST"),
    ("10.1.5.1/33=10.1.5.100-10.1.5.199", "is not an address/prefix"),
    ("10.1.5.1/24=10.1.6.100-10.1.6.199", "is not a range inside 10.1.5.0/24"),
    ("10.1.5.1/24=10.1.5.199-10.1.5.100", "is not a range inside"),
    ("10.1.5.1/24=10.1.5.0-10.1.5.9", "the pool contains 10.1.5.1"),
    ("10.1.5.1/24=10.1.5.200-10.1.5.255", "the pool contains 10.1.5.255"),
    ("10.1.5.1/24=10.1.5.100-10.1.5.199 10.1.5.129/25=10.1.5.130-10.1.5.140", "overlap"),
])
def test_bad_entries_are_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidValue) as exc:
        parse_relay_pools(text)
    assert message in str(exc.value)
    assert exc.value.hint


def test_settings_set_refuses_a_segment_over_the_subnet(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path / "home")
    assert main(["--home", home, "init", "--server", "10.0.0.1", "--image-root",
                 str(tmp_path)]) == 0
    assert main(["--home", home, "settings", "set", f"relay_pools={TWO}"]) == 0
    capsys.readouterr()
    assert main(["--home", home, "settings", "set",
                 "relay_pools=10.0.0.254/16=10.0.9.1-10.0.9.9"]) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == ("error: relay_pools: the segment 10.0.0.0/16 overlaps the subnet "
                        "10.0.0.0/24")
    assert lines[1].startswith("hint: ") and len(lines) == 2
