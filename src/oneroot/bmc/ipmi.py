"""One node's BMC over IPMI 2.0 LAN (RMCP+), with pyghmi: power state, power control and the
next boot device. Blocking calls: callers run them in worker threads, a bounded number at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any

from pyghmi import exceptions as pyghmi_errors
from pyghmi.ipmi import command as pyghmi_command

from oneroot.bmc.common import BmcCredentials, PowerState
from oneroot.errors import BmcError

log = logging.getLogger(__name__)

# IPMI chassis control (IPMI 2.0 §28.3): pyghmi names all but power cycle.
_CHASSIS_NETFN = 0x00
_CHASSIS_CONTROL = 0x02
_POWER_CYCLE = 0x02


class Bmc:
    """A logged-in IPMI session to one BMC (`with Bmc(creds) as bmc: bmc.power_state()`)."""

    def __init__(self, creds: BmcCredentials) -> None:
        self.creds = creds
        self._ipmi: pyghmi_command.Command | None = None

    def __enter__(self) -> Bmc:
        try:
            self._ipmi = pyghmi_command.Command(bmc=self.creds.host, userid=self.creds.user,
                                                password=self.creds.password,
                                                port=self.creds.port)
        except pyghmi_errors.PyghmiException as error:
            raise self._error(error) from None
        except AttributeError as error:
            if "errormsg" not in str(error):
                raise
            # pyghmi (1.6) ends a failed login in whichever thread reads the session's
            # packets: it logs the session out, then records why. The session's own thread,
            # looking in between, finds no reason (many BMCs at once, on a loaded machine).
            raise BmcError(f"BMC {self.creds.where}: the session failed to start (its "
                           "reason was lost)",
                           hint="run `oneroot power status NODE` for the reason") from None
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._ipmi is not None:
            session = self._ipmi.ipmi_session
            try:
                session.logout()
            except (pyghmi_errors.PyghmiException, OSError) as error:
                log.debug("bmc.logout_failed bmc=%s error=%s", self.creds.where, error)
            _forget(session)
            self._ipmi = None

    def power_state(self) -> PowerState:
        reply = self._call(lambda ipmi: ipmi.get_power())
        return PowerState(reply["powerstate"])

    def power_on(self) -> None:
        self._call(lambda ipmi: ipmi.set_power("on", wait=False))

    def power_off(self) -> None:
        self._call(lambda ipmi: ipmi.set_power("off", wait=False))

    def reset(self) -> None:
        self._call(lambda ipmi: ipmi.set_power("reset", wait=False))

    def power_cycle(self) -> None:
        """Off, then on (a node that is off is powered on: a cycle of an off chassis is
        refused by most BMCs)."""
        if self.power_state() is PowerState.OFF:
            self.power_on()
            return
        reply = self._call(lambda ipmi: ipmi.raw_command(
            netfn=_CHASSIS_NETFN, command=_CHASSIS_CONTROL, data=[_POWER_CYCLE]))
        if reply.get("code"):
            raise BmcError(f"BMC {self.creds.where} refused the power cycle "
                           f"(completion code {reply['code']:#04x})",
                           hint="try `oneroot power off` then `oneroot power on`")

    def boot_from_network_once(self) -> None:
        self._call(lambda ipmi: ipmi.set_bootdev("network", persist=False))

    def _call(self, op: Callable[[Any], Any]) -> dict[str, Any]:
        if self._ipmi is None:
            raise RuntimeError("Bmc used outside its `with` block")
        try:
            reply = op(self._ipmi)
        except pyghmi_errors.PyghmiException as error:
            raise self._error(error) from None
        if isinstance(reply, dict) and "error" in reply:
            raise BmcError(f"BMC {self.creds.where}: {reply['error']}",
                           hint="see the BMC's event log (`ipmitool sel list`)")
        return reply if isinstance(reply, dict) else {}

    def _error(self, error: pyghmi_errors.PyghmiException) -> BmcError:
        text = str(error.args[0]) if error.args and error.args[0] else ""
        return bmc_error(self.creds, text)


def _forget(session: Any) -> None:
    """pyghmi (1.6) keeps a logged-out session in its table of sessions being set up and hands
    it to the next `Command` for the same BMC and user in this process, which then fails inside
    pyghmi (`TypeError`: its logout deadline is None). Drop it, so that the next session logs
    in afresh: `oneroot serve`'s admin page powers one node more than once in one process."""
    table = getattr(type(session), "initting_sessions", None)
    if isinstance(table, dict):
        for key, value in list(table.items()):
            if value is session:
                del table[key]


def bmc_error(creds: BmcCredentials, text: str) -> BmcError:
    """pyghmi's error text as a BmcError that names the BMC and says what to check."""
    where = creds.where
    if not text or text == "timeout":
        return BmcError(f"no answer from the BMC at {where}",
                        hint="check bmc_address and that the server reaches the "
                             "management network")
    if "password" in text.lower() or "unauthorized name" in text.lower():
        return BmcError(f"the BMC at {where} refused user {creds.user!r}: {text}",
                        hint="check bmc_user and the file named by bmc_password_file")
    if text in ("Connection lost", "Session no longer connected"):
        return BmcError(f"BMC {where}: the session was lost ({text})",
                        hint="check that the BMC still answers (`oneroot power status NODE`), "
                             "then connect again")
    return BmcError(f"BMC {where}: {text}", hint="check the BMC's settings and logs")
