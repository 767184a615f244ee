"""Nodes' baseboard management controllers: power and boot device over IPMI 2.0 (RMCP+,
pyghmi) or Redfish (sushy), serial-over-LAN over IPMI. One session per node and call
(`connect(creds)`); errors are `BmcError` with a hint."""

from oneroot.bmc.common import BmcCredentials, BmcSession, PowerState
from oneroot.bmc.ipmi import Bmc
from oneroot.bmc.redfish import RedfishBmc
from oneroot.bmc.sol import SolSession
from oneroot.model.profile import BmcProtocol


def connect(creds: BmcCredentials) -> BmcSession:
    """A session to the BMC in the protocol its credentials name (enter it with `with`)."""
    if creds.protocol is BmcProtocol.REDFISH:
        return RedfishBmc(creds)
    return Bmc(creds)


__all__ = ["Bmc", "BmcCredentials", "BmcSession", "PowerState", "RedfishBmc", "SolSession",
           "connect"]
