"""The index entry name overlayfs looks up for a lower file (`ovl_get_index_name_fh`): the hex
of `struct ovl_fb` (version 0, magic 0xfb, length, flags, handle type, the lower filesystem's
uuid, the lower handle). The real thing, decoded by the kernel: tests/integration/
test_nfs_view_handles.py."""

from __future__ import annotations

import pytest

from oneroot.nfs.viewhandles import OriginHeader

UUID = bytes(range(1, 17))
# the upper root's trusted.overlay.origin: the lower root (ext4: inode 2, generation 0)
ROOT_ORIGIN = bytes((0, 0xFB, 29, 0, 1)) + UUID + bytes.fromhex("0200000000000000")


def test_index_name_is_the_origin_handle_in_hex() -> None:
    header = OriginHeader.from_xattr(ROOT_ORIGIN)
    assert header == OriginHeader(flags=0, uuid=UUID)
    fid = bytes.fromhex("52431600ed19e953")  # inode 0x164352, its generation
    assert header.index_name(1, fid) == "00fb1d0001" + UUID.hex() + fid.hex()
    # the lower root's own entry is its origin xattr in hex
    assert header.index_name(1, ROOT_ORIGIN[21:]) == ROOT_ORIGIN.hex()


@pytest.mark.parametrize("bad", [b"", ROOT_ORIGIN[:20], b"\x01" + ROOT_ORIGIN[1:],
                                 ROOT_ORIGIN[:1] + b"\xfa" + ROOT_ORIGIN[2:],
                                 ROOT_ORIGIN + b"\0"])
def test_a_foreign_origin_is_refused(bad: bytes) -> None:
    with pytest.raises(ValueError, match="not an overlayfs origin handle"):
        OriginHeader.from_xattr(bad)


def test_an_oversized_lower_handle_is_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        OriginHeader.from_xattr(ROOT_ORIGIN).index_name(1, b"\0" * 240)
