"""Network reachability: the one place convscope opens a socket to test whether a host answers.

Callers parse their own address forms (``ray://host:port``, a hub's host name) and ask
:func:`reachable` with a host and a port.
"""

from __future__ import annotations

import socket


def reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds (closed at once)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
