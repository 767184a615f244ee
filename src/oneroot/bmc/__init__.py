"""Nodes' baseboard management controllers: power, boot device and serial-over-LAN over IPMI
2.0 (RMCP+), through pyghmi. One `Bmc` or `SolSession` per node and call; errors are `BmcError`
with a hint."""

from oneroot.bmc.ipmi import Bmc, BmcCredentials, PowerState
from oneroot.bmc.sol import SolSession

__all__ = ["Bmc", "BmcCredentials", "PowerState", "SolSession"]
