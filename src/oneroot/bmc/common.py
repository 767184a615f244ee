"""What every BMC backend shares: its credentials, the power states it reports, and the one
interface `ops.power` drives (`BmcSession`), whichever protocol is behind it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

from oneroot.model.profile import BmcProtocol


class PowerState(enum.StrEnum):
    ON = "on"
    OFF = "off"


@dataclass(frozen=True, slots=True, kw_only=True)
class BmcCredentials:
    host: str
    port: int
    user: str
    password: str = field(repr=False)  # never in a repr, a log line or an error
    protocol: BmcProtocol = BmcProtocol.IPMI
    scheme: str = ""  # Redfish: "https" or "http"
    ca_file: str = ""  # Redfish over HTTPS: what the BMC's certificate is checked against

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.scheme:
            return f"{self.scheme}://{host}:{self.port}"
        return f"{host}:{self.port}"


class BmcSession(Protocol):
    """A logged-in session to one BMC; blocking calls, used inside its `with` block."""

    creds: BmcCredentials

    def __enter__(self) -> BmcSession: ...

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None: ...

    def power_state(self) -> PowerState: ...

    def power_on(self) -> None: ...

    def power_off(self) -> None: ...

    def reset(self) -> None: ...

    def power_cycle(self) -> None: ...

    def boot_from_network_once(self) -> None: ...
