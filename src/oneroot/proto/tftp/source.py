"""What a read transfer sends: anything with `read(n)`, `size()` and `close()` (fbtftp's idea).

The transfer never opens files itself: the edge hands it a `FileSource` (an opened file, bytes
rendered for one node, ...). `NetasciiSource` wraps any source and converts on the fly.
"""

from __future__ import annotations

from typing import BinaryIO, Protocol

__all__ = ["BytesSource", "FileObjectSource", "FileSource", "NetasciiSource", "to_netascii"]


class FileSource(Protocol):
    """A sequential byte stream of known or unknown length.

    `read(n)` returns exactly `n` bytes unless the stream ends: a shorter result (possibly empty)
    means end of data, and the transfer treats it as the last block.
    """

    def read(self, n: int, /) -> bytes: ...

    def size(self) -> int | None: ...

    def close(self) -> None: ...


class BytesSource:
    """In-memory content, e.g. a `pxelinux.cfg/01-<mac>` rendered for one node."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(bytes(data))
        self._pos = 0

    def read(self, n: int, /) -> bytes:
        chunk = self._data[self._pos : self._pos + n]
        self._pos += len(chunk)
        return chunk.tobytes()

    def size(self) -> int:
        return len(self._data)

    def close(self) -> None:
        self._data.release()


class FileObjectSource:
    """An already opened binary file (the edge opens it; a buffered reader keeps reads exact).

    `size` is taken by the opener (from `fstat`), so this class does no IO beyond `read`.
    """

    __slots__ = ("_file", "_size")

    def __init__(self, file: BinaryIO, size: int | None) -> None:
        self._file = file
        self._size = size

    def read(self, n: int, /) -> bytes:
        # BufferedReader.read(n) loops until n bytes or EOF, as FileSource requires.
        return self._file.read(n)

    def size(self) -> int | None:
        return self._size

    def close(self) -> None:
        self._file.close()


def to_netascii(data: bytes) -> bytes:
    """Unix text to netascii (RFC 764): CR -> CR NUL, LF -> CR LF. Byte-local, so any split of the
    input converts to the same output split; `NetasciiSource` relies on it."""
    return data.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


class NetasciiSource:
    """Converts another source to netascii while streaming.

    The output is longer than the input, so it is buffered and cut at exactly `n` bytes: a CR LF
    or CR NUL pair may straddle two blocks, which is what the receiver expects (it decodes the
    stream, not the blocks). The size is unknown without reading the whole file, so `size()` is
    None and tsize is not offered.
    """

    __slots__ = ("_buffer", "_eof", "_inner")

    _CHUNK = 16384

    def __init__(self, inner: FileSource) -> None:
        self._inner = inner
        self._buffer = bytearray()
        self._eof = False

    def read(self, n: int, /) -> bytes:
        while len(self._buffer) < n and not self._eof:
            raw = self._inner.read(max(n, self._CHUNK))
            if len(raw) < max(n, self._CHUNK):
                self._eof = True
            self._buffer += to_netascii(raw)
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def size(self) -> int | None:
        return None

    def close(self) -> None:
        self._inner.close()
