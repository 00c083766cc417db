"""Listening sockets opened before the node starts: bound while still root, or inherited.

Owns: binding every listener address of the enabled roles ahead of time (so `mxgate serve`
started as root can drop privileges before it opens anything else), and handing those sockets
to worker processes as inherited descriptors (MXGATE_LISTEN_FDS), since an unprivileged worker
could not bind a port below 1024 itself. Listeners take a pre-opened socket when there is one
and bind their own otherwise. Process-wide by nature, like systemd's LISTEN_FDS.
"""

from __future__ import annotations

import os
import socket

from mxgate.errors import ConfigError
from mxgate.names import parse_hostport

ENV = "MXGATE_LISTEN_FDS"  # "host|port|fd,host|port|fd" (host may be IPv6, hence "|")
BACKLOG = 1024

_open: dict[tuple[str, int], socket.socket] = {}


def parse_listen(addr: str) -> tuple[str, int]:
    """"127.0.0.1:25", "[::1]:25", "localhost:2525" → (host, port); port 0 picks a free one."""
    try:
        return parse_hostport(addr, min_port=0)
    except ValueError:
        raise ConfigError(f"listen address {addr!r}: expected host:port or [ipv6]:port") from None


def bind_stream(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def prebind(addresses: list[str], *, reuse_port: bool = False) -> None:
    """Bind every address now (as root, before dropping privileges); listeners take them later."""
    for addr in addresses:
        host, port = parse_listen(addr)
        if (host, port) in _open:
            continue
        try:
            _open[(host, port)] = bind_stream(host, port, reuse_port=reuse_port)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {addr!r}: {exc.strerror or exc}") from None


def take(host: str, port: int) -> socket.socket | None:
    """The pre-opened socket for host:port, if there is one (it stays open for worker hand-over)."""
    return _open.get((host, port))


def inherit() -> None:
    """In a worker: adopt the descriptors the first process passed (MXGATE_LISTEN_FDS)."""
    for item in filter(None, os.environ.pop(ENV, "").split(",")):
        host, port, fd = item.rsplit("|", 2)
        _open[(host, int(port))] = socket.socket(fileno=int(fd))


def for_child(addresses: list[str]) -> tuple[dict[str, str], tuple[int, ...]]:
    """Environment entry and descriptors that hand these addresses' open sockets to a child process."""
    wanted = {parse_listen(a) for a in addresses}
    live = {k: s for k, s in _open.items() if k in wanted and s.fileno() >= 0}
    if not live:
        return {}, ()
    value = ",".join(f"{h}|{p}|{s.fileno()}" for (h, p), s in live.items())
    return {ENV: value}, tuple(s.fileno() for s in live.values())
