"""Run the TFTP fuzz entry point for 10,000 inputs (CI's floor)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

FUZZ = Path(__file__).resolve().parents[4] / "fuzz" / "fuzz_tftp.py"


def test_fuzz_tftp_10000_inputs() -> None:
    spec = importlib.util.spec_from_file_location("fuzz_tftp", FUZZ)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parsed = module.run(10000, seed=1)
    assert parsed > 1000  # mutations must reach the string and option parsers, not only fail
