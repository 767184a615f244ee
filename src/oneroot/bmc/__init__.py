"""Nodes' baseboard management controllers: power and boot device over IPMI 2.0 (RMCP+),
through pyghmi. One `Bmc` per node and call; errors are `BmcError` with a hint."""

from oneroot.bmc.ipmi import Bmc, BmcCredentials, PowerState

__all__ = ["Bmc", "BmcCredentials", "PowerState"]
