"""systemd readiness (`Type=notify`): one datagram to $NOTIFY_SOCKET, no dependency.

Owns: the sd_notify(3) wire format — newline-separated KEY=VALUE assignments in one datagram
to the AF_UNIX socket named by NOTIFY_SOCKET (a leading "@" names the abstract namespace).
Without NOTIFY_SOCKET (not under systemd) it does nothing.
"""

from __future__ import annotations

import os
import socket

ENV = "NOTIFY_SOCKET"


def notify(*assignments: str, environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """Send e.g. notify("READY=1", "STATUS=serving"); True if a service manager was told."""
    path = environ.get(ENV, "")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]  # abstract socket (sd_notify(3))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(path)
            sock.sendall("\n".join(assignments).encode())
        except OSError:
            return False  # the manager went away: readiness is advisory, the node keeps running
    return True
