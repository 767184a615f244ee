"""A userspace NFSv4.0 client for tests: libnfs-utils' `nfs-ls`/`nfs-cat`/`nfs-cp`, and libnfs
itself through ctypes for a REMOVE, which the tools lack. No kernel mount, so a test reads a
server on loopback as the client at 127.0.0.1 without touching the host's mounts.

    client = NfsClient(port)
    assert client.read("/etc/passwd").startswith("root:")
    assert client.cat("/etc/shadow").returncode != 0
"""

from __future__ import annotations

import ctypes
import ctypes.util
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

TOOLS = ("nfs-ls", "nfs-cat", "nfs-cp")
LIBNFS = ctypes.util.find_library("nfs")


class NfsClientError(AssertionError):
    """An NFS operation a test expected to succeed failed (an assertion, for pytest)."""


def available(*, libnfs: bool = False) -> bool:
    """Whether the client tools (and, with `libnfs`, the library itself) are installed."""
    return all(shutil.which(t) for t in TOOLS) and (not libnfs or LIBNFS is not None)


class _NfsUrl(ctypes.Structure):
    _fields_ = [("server", ctypes.c_char_p), ("path", ctypes.c_char_p),
                ("file", ctypes.c_char_p)]


@dataclass(frozen=True, slots=True)
class NfsClient:
    port: int
    host: str = "127.0.0.1"
    netns: str | None = None  # run the tools inside this network namespace (a node's)

    def url(self, path: str | Path) -> str:
        return f"nfs://{self.host}{path}?version=4&nfsport={self.port}"

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        wrap = ["ip", "netns", "exec", self.netns] if self.netns else []
        return subprocess.run([*wrap, tool, *args], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL, check=False)

    def ls(self, path: str | Path) -> subprocess.CompletedProcess[str]:
        return self.run("nfs-ls", self.url(path))

    def names(self, path: str | Path) -> list[str]:
        """The entries of directory `path`; raises if it cannot be listed."""
        proc = self.ls(path)
        if proc.returncode != 0:
            raise NfsClientError(f"nfs-ls {path}: {proc.stderr}")
        return [line.split()[-1] for line in proc.stdout.splitlines() if line.strip()]

    def lists_nothing(self, path: str | Path) -> bool:
        """Directory `path` is empty, absent or not listable (a masked view's emptied
        directory keeps its mode, and 0700 refuses the view's squashed users)."""
        proc = self.ls(path)
        return proc.returncode != 0 or not proc.stdout.strip()

    def cat(self, path: str | Path) -> subprocess.CompletedProcess[str]:
        return self.run("nfs-cat", self.url(path))

    def read(self, path: str | Path) -> str:
        """The text of file `path`; raises if it cannot be read."""
        proc = self.cat(path)
        if proc.returncode != 0:
            raise NfsClientError(f"nfs-cat {path}: {proc.stderr}")
        return proc.stdout

    def copy_in(self, local: Path, path: str | Path) -> subprocess.CompletedProcess[str]:
        """`nfs-cp` the local file `local` to `path` on the server."""
        return self.run("nfs-cp", str(local), self.url(path))

    def remove(self, path: str | Path) -> None:
        """NFS REMOVE through libnfs (`nfs_unlink`); raises if the server refuses it."""
        if LIBNFS is None:
            raise NfsClientError("libnfs is not installed")
        lib = _libnfs(LIBNFS)
        ctx = lib.nfs_init_context()
        url = lib.nfs_parse_url_full(ctx, self.url(path).encode())
        if not url:
            raise NfsClientError(f"bad url {self.url(path)}: {lib.nfs_get_error(ctx)!r}")
        try:
            if lib.nfs_mount(ctx, url.contents.server, url.contents.path) != 0:
                raise NfsClientError(f"mount for {path}: {lib.nfs_get_error(ctx)!r}")
            if lib.nfs_unlink(ctx, url.contents.file) != 0:
                raise NfsClientError(f"unlink {path}: {lib.nfs_get_error(ctx)!r}")
        finally:
            lib.nfs_destroy_url(url)
            lib.nfs_destroy_context(ctx)


def _libnfs(name: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(name)
    lib.nfs_init_context.restype = ctypes.c_void_p
    lib.nfs_parse_url_full.restype = ctypes.POINTER(_NfsUrl)
    lib.nfs_parse_url_full.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nfs_mount.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    lib.nfs_unlink.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nfs_get_error.restype = ctypes.c_char_p
    lib.nfs_get_error.argtypes = [ctypes.c_void_p]
    lib.nfs_destroy_url.argtypes = [ctypes.POINTER(_NfsUrl)]
    lib.nfs_destroy_context.argtypes = [ctypes.c_void_p]
    return lib
