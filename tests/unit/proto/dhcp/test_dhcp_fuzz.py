"""Run the DHCP fuzz entry point for 10,000 inputs (CI's floor)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

FUZZ = Path(__file__).resolve().parents[4] / "fuzz" / "fuzz_dhcp.py"


def test_fuzz_dhcp_10000_inputs() -> None:
    spec = importlib.util.spec_from_file_location("fuzz_dhcp", FUZZ)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parsed = module.run(10000, seed=1)
    assert parsed > 1000  # the mutations must reach the option parser, not just the header
