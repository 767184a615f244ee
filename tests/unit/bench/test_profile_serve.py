"""bench/dhcp/profile_serve.py runs to its figure and exits without a logging error (it printed
"I/O operation on closed file" twice: `logging.shutdown` flushed handlers whose files it had
closed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "bench" / "dhcp" / "profile_serve.py"


def test_it_prints_its_figure_and_nothing_on_stderr() -> None:
    r = subprocess.run([sys.executable, str(SCRIPT), "--exchanges", "16", "--repeat", "2"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "µs of CPU per DORA exchange in DhcpService" in r.stdout
    assert r.stderr == ""
