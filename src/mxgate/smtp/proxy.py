"""PROXY protocol v1 and v2 headers (HAProxy's spec, proxy-protocol.txt), parsed without I/O.

Owns: recognising and decoding the header a load balancer sends before the SMTP greeting, so
attribution and checks see the real client address. Must not decide whom to believe: the
listener only calls this for peers in `trusted_proxies`; from anyone else the bytes are just an
unknown command.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # spec §2.1: a v1 header is at most 107 bytes including CRLF
V2_MAX = 16 + 216  # header + the largest address block we accept (UNIX is not used)


class ProxyHeaderError(ValueError):
    """The bytes are not a valid PROXY header."""


@dataclass(frozen=True)
class ProxiedAddress:
    source_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None  # None: LOCAL/UNKNOWN, keep the real peer
    source_port: int
    consumed: int  # bytes of the buffer that belonged to the header


def parse_proxy_header(buf: bytes) -> ProxiedAddress | None:
    """Return the parsed header, None if more bytes are needed, or raise ProxyHeaderError."""
    if buf.startswith(V2_SIGNATURE[: len(buf)]) and len(buf) < 16:
        return None
    if buf.startswith(V2_SIGNATURE):
        return _parse_v2(buf)
    if buf.startswith(b"PROXY "[: len(buf)]) and len(buf) < 6:
        return None
    if buf.startswith(b"PROXY "):
        end = buf.find(b"\r\n")
        if end < 0:
            if len(buf) >= V1_MAX:
                raise ProxyHeaderError("v1 header too long")
            return None
        return _parse_v1(buf[:end].decode("ascii", "replace"), end + 2)
    raise ProxyHeaderError("no PROXY header from a trusted proxy")


def _parse_v1(line: str, consumed: int) -> ProxiedAddress:
    parts = line.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxiedAddress(None, 0, consumed)
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"malformed v1 header {line[:60]!r}")
    try:
        src = ipaddress.ip_address(parts[2])
        ipaddress.ip_address(parts[3])
        sport = int(parts[4])
    except ValueError:
        raise ProxyHeaderError("malformed v1 address") from None
    if (parts[1] == "TCP4") != (src.version == 4) or not 0 <= sport < 65536:
        raise ProxyHeaderError("v1 address family mismatch")
    return ProxiedAddress(src, sport, consumed)


def _parse_v2(buf: bytes) -> ProxiedAddress | None:
    ver_cmd, fam, length = buf[12], buf[13], struct.unpack("!H", buf[14:16])[0]
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError("unsupported PROXY version")
    if length > V2_MAX:
        raise ProxyHeaderError("v2 header too long")
    if len(buf) < 16 + length:
        return None
    consumed = 16 + length
    body = buf[16:consumed]
    if ver_cmd & 0x0F == 0x0:  # LOCAL: health check by the proxy itself
        return ProxiedAddress(None, 0, consumed)
    if ver_cmd & 0x0F != 0x1:
        raise ProxyHeaderError("unknown v2 command")
    if fam == 0x11 and length >= 12:
        return ProxiedAddress(ipaddress.IPv4Address(body[0:4]), struct.unpack("!H", body[8:10])[0], consumed)
    if fam == 0x21 and length >= 36:
        return ProxiedAddress(ipaddress.IPv6Address(body[0:16]), struct.unpack("!H", body[32:34])[0], consumed)
    if fam == 0x00:
        return ProxiedAddress(None, 0, consumed)
    raise ProxyHeaderError("unsupported v2 address family")
