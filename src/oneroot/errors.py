"""The one error tree of oneroot.

Every error a user can cause carries a message naming the problem and a hint naming the fix;
`oneroot.cli.main` is the one place that turns them into `error:`/`hint:` lines and exit codes.

    OnerootError
    ├── UsageError               bad command-line input
    ├── ConfigError              settings or a config file that cannot be used
    ├── InventoryError
    │   ├── NotFound             no such node/group/image/runlevel
    │   ├── Conflict             duplicate name, MAC or address
    │   └── InvalidValue         a value outside what the inventory accepts
    ├── RootSpecError            a `root=` line that does not parse (carries a caret line)
    ├── ProtocolError
    │   ├── MalformedPacket      the peer sent bytes we cannot decode (remote's fault)
    │   └── LocalProtocolError   we asked a protocol core for something it cannot do
    ├── BuildError               initramfs / image builds
    ├── ExternalToolError        a program we run failed or is missing
    ├── BmcError                 a node's BMC refused, failed or did not answer
    └── LabError                 the virtual lab
"""

from __future__ import annotations


class OnerootError(Exception):
    """Base of every error oneroot raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(OnerootError):
    exit_code = 2


class ConfigError(OnerootError):
    pass


class InventoryError(OnerootError):
    pass


class NotFound(InventoryError):
    exit_code = 3


class Conflict(InventoryError):
    exit_code = 4


class InvalidValue(InventoryError):
    exit_code = 2


class RootSpecError(OnerootError):
    """A `root=` spec that does not parse; `caret` is the text with a `^` under the bad token."""

    exit_code = 2

    def __init__(self, message: str, *, text: str, start: int, end: int | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.text = text
        self.start = start
        self.end = end if end is not None and end > start else start + 1

    @property
    def caret(self) -> str:
        width = max(1, self.end - self.start)
        return f"{self.text}\n{' ' * self.start}{'^' * width}"

    def __str__(self) -> str:
        return f"{self.message}\n{self.caret}"


class ProtocolError(OnerootError):
    pass


class MalformedPacket(ProtocolError):
    """The remote peer sent something we cannot decode."""


class LocalProtocolError(ProtocolError):
    """We asked a protocol state machine for something it cannot do."""


class BuildError(OnerootError):
    pass


class ExternalToolError(OnerootError):
    pass


class BmcError(OnerootError):
    """A node's BMC refused a request, failed it or did not answer."""


class LabError(OnerootError):
    pass
