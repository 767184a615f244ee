"""A node's serial console over IPMI 2.0 serial-over-LAN, with pyghmi's `Console`: send the
keyboard's bytes, receive the serial line's. Blocking, one thread: `receive` drives pyghmi."""

from __future__ import annotations

import logging
import time
from types import TracebackType

from pyghmi import exceptions as pyghmi_errors
from pyghmi.ipmi import console as pyghmi_console

from oneroot.bmc.common import BmcCredentials
from oneroot.bmc.ipmi import bmc_error

log = logging.getLogger(__name__)

ACTIVATE_TIMEOUT = 20.0  # seconds for login and payload activation (pyghmi retries inside)


class SolSession:
    """An active SOL payload (`with SolSession(creds) as sol: sol.send(b"ls\\r")`)."""

    def __init__(self, creds: BmcCredentials) -> None:
        self.creds = creds
        self.notices: list[str] = []  # what the BMC said besides data ("powered down")
        self._received: list[bytes] = []
        self._error: str | None = None
        self._console: pyghmi_console.Console | None = None

    def __enter__(self) -> SolSession:
        try:
            self._console = pyghmi_console.Console(
                bmc=self.creds.host, userid=self.creds.user, password=self.creds.password,
                port=self.creds.port, iohandler=self._on_output)
        except pyghmi_errors.PyghmiException as error:
            raise bmc_error(self.creds, str(error.args[0]) if error.args else "") from None
        deadline = time.monotonic() + ACTIVATE_TIMEOUT
        while not self._console.connected and time.monotonic() < deadline:
            self._raise_if_broken()
            pyghmi_console.Console.wait_for_rsp(0.1)
        self._raise_if_broken()
        if not self._console.connected:
            raise bmc_error(self.creds, "")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._console is not None:
            try:
                self._console.close()
            except (pyghmi_errors.PyghmiException, OSError) as failure:
                log.debug("sol.close_failed bmc=%s error=%s", self.creds.where, failure)
            self._console = None

    def send(self, data: bytes) -> None:
        """Type `data` on the node's serial line (returns once the BMC acknowledged it)."""
        console = self._active()
        try:
            console.send_data(data)
        except pyghmi_errors.PyghmiException as error:
            raise bmc_error(self.creds, str(error.args[0]) if error.args else "") from None
        self._raise_if_broken()

    def receive(self, timeout: float) -> bytes:
        """What the node wrote since the last call, waiting at most `timeout` seconds for
        the BMC; raises BmcError once the session is lost."""
        self._active()
        pyghmi_console.Console.wait_for_rsp(timeout)
        data = b"".join(self._received)
        self._received.clear()
        if not data:
            self._raise_if_broken()
        return data

    def _active(self) -> pyghmi_console.Console:
        if self._console is None:
            raise RuntimeError("SolSession used outside its `with` block")
        self._raise_if_broken()
        return self._console

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise bmc_error(self.creds, self._error)

    def _on_output(self, data: bytes | dict[str, str]) -> None:
        if isinstance(data, dict):
            if "error" in data:
                self._error = str(data["error"]) or "session lost"
            elif "info" in data:
                self.notices.append(str(data["info"]))
            return
        self._received.append(bytes(data))
