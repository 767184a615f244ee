"""Option negotiation for a read request: RFC 2347 (OACK), 2348 blksize, 2349 timeout/tsize,
7440 windowsize. Pure: the request's options and our limits in, the accepted values out.

Rules (server side):
- Names compare case-insensitively; the first occurrence of a name wins; unknown names and
  values that do not parse or fall outside the RFC's range are ignored (not echoed), so a client
  falls back to the RFC 1350 default for that option instead of losing the transfer.
- blksize 8..65464 and windowsize 1..65535 are clamped to our maxima and the clamped value is
  echoed (both RFCs allow a smaller answer). The window is also held to `max_window_bytes`
  (windowsize x blksize): a burst larger than the client's socket buffer (about 200 KiB by
  default on Linux, less in datagram count for big blocks) overflows it, and every overflow
  costs a timeout. Measured with atftp on loopback: blksize 8192 x window 16 took 69 s for
  32 MiB, against 0.3 s at window 1.
- timeout 1..255 may not be changed by the server (RFC 2349): within our maximum it is accepted
  as asked, above it the option is ignored.
- tsize is answered with the size when the size is known (octet mode from a sized source);
  otherwise it is left out. It is also left out for an empty file: curl (7.88) rejects
  `tsize 0` in an OACK as illegal, and the first (empty) DATA block tells the client as much.
- Nothing accepted means no OACK: the transfer starts with DATA 1 as in RFC 1350.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_BLKSIZE",
    "MAX_BLKSIZE",
    "MAX_WINDOWSIZE",
    "MIN_BLKSIZE",
    "Negotiated",
    "blksize_for_mtu",
    "negotiate",
]

DEFAULT_BLKSIZE = 512
MIN_BLKSIZE, MAX_BLKSIZE = 8, 65464
MIN_WINDOWSIZE, MAX_WINDOWSIZE = 1, 65535
MIN_TIMEOUT, MAX_TIMEOUT = 1, 255
_IPV4_UDP_TFTP_HEADERS = 20 + 8 + 4


def blksize_for_mtu(mtu: int) -> int:
    """The largest blksize whose DATA datagram fits one IPv4 packet of `mtu` bytes unfragmented
    (1468 at 1500, 8968 at 9000), within the RFC 2348 range."""
    return max(MIN_BLKSIZE, min(MAX_BLKSIZE, mtu - _IPV4_UDP_TFTP_HEADERS))


@dataclass(frozen=True, slots=True, kw_only=True)
class Negotiated:
    blksize: int = DEFAULT_BLKSIZE
    windowsize: int = 1
    timeout: int | None = None  # seconds, when the client asked for one and we accepted it
    tsize: int | None = None  # the size we announced
    # What goes into the OACK, in the client's order; empty means "send no OACK".
    echoed: tuple[tuple[str, str], ...] = ()


def _int(value: str) -> int | None:
    # RFC values are ASCII decimal; reject signs, spaces and absurd lengths before int().
    if not value.isascii() or not value.isdigit() or len(value) > 10:
        return None
    return int(value)


def negotiate(
    options: Iterable[tuple[str, str]],
    *,
    size: int | None,
    max_blksize: int,
    max_windowsize: int,
    max_timeout: int = MAX_TIMEOUT,
    max_window_bytes: int = 1 << 16,
) -> Negotiated:
    blksize, windowsize = DEFAULT_BLKSIZE, 1
    timeout: int | None = None
    tsize: int | None = None
    echoed: list[tuple[str, str]] = []
    seen: set[str] = set()
    for raw_name, raw_value in options:
        name = raw_name.lower()
        if name in seen:
            continue
        seen.add(name)
        value = _int(raw_value)
        if value is None:
            continue
        match name:
            case "blksize" if MIN_BLKSIZE <= value <= MAX_BLKSIZE:
                blksize = min(value, max(MIN_BLKSIZE, max_blksize))
                echoed.append((raw_name, str(blksize)))
            case "windowsize" if MIN_WINDOWSIZE <= value <= MAX_WINDOWSIZE:
                windowsize = min(value, max(MIN_WINDOWSIZE, max_windowsize))
                echoed.append((raw_name, str(windowsize)))
            case "timeout" if MIN_TIMEOUT <= value <= min(MAX_TIMEOUT, max_timeout):
                timeout = value
                echoed.append((raw_name, str(value)))
            case "tsize" if size:
                tsize = size
                echoed.append((raw_name, str(size)))
            case _:
                pass
    byte_limit = max(MIN_WINDOWSIZE, max_window_bytes // blksize)
    if windowsize > byte_limit:  # blksize may come after windowsize: clamp once both are known
        windowsize = byte_limit
        echoed = [(k, str(windowsize)) if k.lower() == "windowsize" else (k, v)
                  for k, v in echoed]
    return Negotiated(
        blksize=blksize, windowsize=windowsize, timeout=timeout, tsize=tsize, echoed=tuple(echoed)
    )
