"""Option negotiation (RFC 2347/2348/2349/7440) as a table."""

from __future__ import annotations

import pytest

from oneroot.proto.tftp import blksize_for_mtu, negotiate

LIMITS = {"max_blksize": 1468, "max_windowsize": 64, "max_timeout": 30}


@pytest.mark.parametrize(
    ("options", "size", "blksize", "windowsize", "timeout", "echoed"),
    [
        ((), 100, 512, 1, None, ()),
        ((("blksize", "1024"),), 100, 1024, 1, None, (("blksize", "1024"),)),
        ((("blksize", "65464"),), 100, 1468, 1, None, (("blksize", "1468"),)),  # clamped
        ((("BLKSIZE", "8"),), 100, 8, 1, None, (("BLKSIZE", "8"),)),  # case kept in the echo
        ((("blksize", "7"),), 100, 512, 1, None, ()),  # below RFC 2348 range: ignored
        ((("blksize", "65465"),), 100, 512, 1, None, ()),  # above the range: ignored
        ((("blksize", "-1"),), 100, 512, 1, None, ()),
        ((("blksize", " 512"),), 100, 512, 1, None, ()),
        ((("blksize", "١٢٣"),), 100, 512, 1, None, ()),  # non-ASCII digits
        ((("blksize", "99999999999999999999"),), 100, 512, 1, None, ()),
        ((("tsize", "0"),), 1234, 512, 1, None, (("tsize", "1234"),)),
        ((("tsize", "0"),), None, 512, 1, None, ()),  # unknown size (netascii): omitted
        ((("tsize", "0"),), 0, 512, 1, None, ()),  # empty file: omitted (curl rejects tsize 0)
        ((("tsize", "x"),), 5, 512, 1, None, ()),
        ((("timeout", "5"),), 5, 512, 1, 5, (("timeout", "5"),)),
        ((("timeout", "0"),), 5, 512, 1, None, ()),
        ((("timeout", "31"),), 5, 512, 1, None, ()),  # above our max: not accepted, not changed
        ((("windowsize", "16"),), 5, 512, 16, None, (("windowsize", "16"),)),
        # windowsize x blksize held to 64 KiB, whichever option comes first
        ((("windowsize", "60"), ("blksize", "1200")), 5, 1200, 54, None,
         (("windowsize", "54"), ("blksize", "1200"))),
        ((("BLKSIZE", "1468"), ("WindowSize", "64")), 5, 1468, 44, None,
         (("BLKSIZE", "1468"), ("WindowSize", "44"))),
        ((("windowsize", "65535"),), 5, 512, 64, None, (("windowsize", "64"),)),
        ((("windowsize", "100"), ("blksize", "65464")), 5, 1468, 44, None,
         (("windowsize", "44"), ("blksize", "1468"))),
        ((("windowsize", "0"),), 5, 512, 1, None, ()),
        ((("windowsize", "65536"),), 5, 512, 1, None, ()),
        ((("multicast", ""), ("blksize", "1000")), 5, 512 + 488, 1, None, (("blksize", "1000"),)),
        ((("blksize", "1000"), ("blksize", "600")), 5, 1000, 1, None, (("blksize", "1000"),)),
        (
            (("tsize", "0"), ("blksize", "1468"), ("windowsize", "16"), ("timeout", "2")),
            7,
            1468,
            16,
            2,
            (("tsize", "7"), ("blksize", "1468"), ("windowsize", "16"), ("timeout", "2")),
        ),
    ],
)
def test_negotiate(
    options: tuple[tuple[str, str], ...],
    size: int | None,
    blksize: int,
    windowsize: int,
    timeout: int | None,
    echoed: tuple[tuple[str, str], ...],
) -> None:
    result = negotiate(options, size=size, **LIMITS)
    assert (result.blksize, result.windowsize, result.timeout, result.echoed) == (
        blksize, windowsize, timeout, echoed,
    )


@pytest.mark.parametrize(
    ("mtu", "blksize"),
    [(1500, 1468), (9000, 8968), (576, 544), (65536, 65464), (20, 8), (1280, 1248)],
)
def test_blksize_for_mtu(mtu: int, blksize: int) -> None:
    """IPv4 (20) + UDP (8) + TFTP (4) headers come off the MTU, within RFC 2348's 8..65464."""
    assert blksize_for_mtu(mtu) == blksize
