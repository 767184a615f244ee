"""A free port on the loopback interface for a server a test starts."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1", *, udp: bool = False) -> int:
    """A port the kernel just handed out on `host` (TCP unless `udp`), closed again.

    Another process may take it before the caller binds it; on loopback, in a test, that does
    not happen in practice."""
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
