"""One node's BMC over DMTF Redfish, with sushy: power state, power control and a one-time
network boot. The BMC must manage exactly one ComputerSystem (a node's BMC does). Blocking
calls, like `bmc.ipmi.Bmc`, which this mirrors method for method; the console stays IPMI SOL.

Redfish power actions are asynchronous on real BMCs (and on sushy-tools' emulator): a cycle
waits until the BMC reports the node off before it powers it on again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import sushy
from sushy import exceptions as sushy_errors

from oneroot.bmc.common import BmcCredentials, PowerState
from oneroot.errors import BmcError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0  # seconds: an unreachable BMC fails fast
READ_TIMEOUT = 30.0
SERVER_RETRIES = 1  # sushy's default (10 retries 3 s apart) would hold a row for 30 s
OFF_SETTLE = 30.0  # seconds a cycle waits for the BMC to report off
POLL = 0.5

# Redfish's states, as the two `oneroot power` reports: a node powering off is still on.
_STATES = {sushy.PowerState.ON: PowerState.ON, sushy.PowerState.POWERING_OFF: PowerState.ON,
           sushy.PowerState.PAUSED: PowerState.ON, sushy.PowerState.OFF: PowerState.OFF,
           sushy.PowerState.POWERING_ON: PowerState.OFF}

T = TypeVar("T")


class RedfishBmc:
    """A Redfish session to one BMC (`with RedfishBmc(creds) as bmc: bmc.power_state()`)."""

    def __init__(self, creds: BmcCredentials) -> None:
        self.creds = creds
        self._root: Any = None
        self._system: Any = None

    def __enter__(self) -> RedfishBmc:
        if not self.creds.scheme:
            raise RuntimeError("Redfish credentials without a URL scheme")
        try:
            self._root = sushy.Sushy(self.creds.where, username=self.creds.user,
                                     password=self.creds.password,
                                     verify=self.creds.ca_file or True,
                                     server_side_retries=SERVER_RETRIES,
                                     server_side_retries_delay=1, read_timeout=READ_TIMEOUT,
                                     connect_timeout=CONNECT_TIMEOUT)
            self._system = self._root.get_system()
        except sushy_errors.SushyError as error:
            self._root = None
            raise redfish_error(self.creds, error) from None
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        # Dropping the root ends a Redfish session, if sushy opened one (`Sushy.__del__`).
        self._system = self._root = None

    def power_state(self) -> PowerState:
        def read(system: Any) -> PowerState:
            system.refresh()
            return _STATES.get(system.power_state, PowerState.OFF)
        return self._call(read)

    def power_on(self) -> None:
        self._call(lambda system: self._reset(system, sushy.ResetType.ON,
                                              sushy.ResetType.FORCE_ON))

    def power_off(self) -> None:
        self._call(lambda system: self._reset(system, sushy.ResetType.FORCE_OFF))

    def reset(self) -> None:
        self._call(lambda system: self._reset(system, sushy.ResetType.FORCE_RESTART))

    def power_cycle(self) -> None:
        """Off, then on: the BMC's PowerCycle where it offers one; else ForceOff, wait for
        off, On. A node that is off is powered on."""
        if self.power_state() is PowerState.OFF:
            self.power_on()
            return
        allowed = self._call(lambda system: system.get_allowed_reset_system_values())
        if sushy.ResetType.POWER_CYCLE in allowed:
            self._call(lambda system: self._reset(system, sushy.ResetType.POWER_CYCLE))
            return
        self.power_off()
        deadline = time.monotonic() + OFF_SETTLE
        while self.power_state() is not PowerState.OFF:
            if time.monotonic() > deadline:
                raise BmcError(f"BMC {self.creds.where} did not power the node off within "
                               f"{OFF_SETTLE:g} s", hint="see the BMC's event log, then retry")
            time.sleep(POLL)
        self.power_on()

    def boot_from_network_once(self) -> None:
        self._call(lambda system: system.set_system_boot_options(
            target=sushy.BootSource.PXE, enabled=sushy.BootSourceOverrideEnabled.ONCE))

    def _reset(self, system: Any, *choices: sushy.ResetType) -> None:
        """The first of `choices` the BMC allows (On, else ForceOn…)."""
        allowed = system.get_allowed_reset_system_values()
        for choice in choices:
            if choice in allowed:
                system.reset_system(choice)
                return
        raise BmcError(f"BMC {self.creds.where} offers no {choices[0].value} reset "
                       f"(it offers {', '.join(sorted(a.value for a in allowed)) or 'none'})",
                       hint="use IPMI for this node: --set bmc_protocol=ipmi")

    def _call(self, op: Callable[[Any], T]) -> T:
        if self._system is None:
            raise RuntimeError("RedfishBmc used outside its `with` block")
        try:
            return op(self._system)
        except sushy_errors.SushyError as error:
            raise redfish_error(self.creds, error) from None


def redfish_error(creds: BmcCredentials, error: sushy_errors.SushyError) -> BmcError:
    """sushy's exception as a BmcError that names the BMC and says what to check."""
    where = creds.where
    if isinstance(error, sushy_errors.AccessError):
        return BmcError(f"the BMC at {where} refused user {creds.user!r} "
                        f"(HTTP {error.status_code})",
                        hint="check bmc_user and the file named by bmc_password_file")
    if isinstance(error, sushy_errors.ConnectionError):
        text = str(error)
        if "CERTIFICATE_VERIFY_FAILED" in text or "SSLError" in text:
            checked = f"against {creds.ca_file}" if creds.ca_file else "by the default CAs"
            return BmcError(f"the BMC at {where} has an HTTPS certificate not trusted "
                            f"{checked}", hint="set bmc_ca_file to the CA that signed it "
                                               "(or to the BMC's own certificate)")
        return BmcError(f"no answer from the BMC at {where}",
                        hint="check bmc_address (and bmc_protocol) and that the server "
                             "reaches the management network")
    if isinstance(error, sushy_errors.UnknownDefaultError):
        return BmcError(f"the BMC at {where} does not manage exactly one system",
                        hint="oneroot drives one system per BMC; give each node its own "
                             "bmc_address")
    if isinstance(error, sushy_errors.HTTPError):
        return BmcError(f"BMC {where}: HTTP {error.status_code}: {error.detail or error}",
                        hint="check the BMC's settings and logs")
    return BmcError(f"BMC {where}: {error}", hint="check the BMC's settings and logs")
