"""The lab network's state file (the namespaces themselves: tests/integration/test_lab_netns.py)."""

from __future__ import annotations

from oneroot.lab.netns import LabProcess, LabState


def test_state_roundtrip() -> None:
    state = LabState(name="1-abc", netns="oneroot-lab-1-abc", bridge="br0", owner_pid=1,
                     owner_start_time=5, clients=["oneroot-lab-1-abc-c0"], taps=["tap0"],
                     processes=[LabProcess(pid=42, start_time=7, what="qemu:vm")])
    assert LabState.from_json(state.to_json()) == state
