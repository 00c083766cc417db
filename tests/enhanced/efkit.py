"""Helpers of the enhanced-filtering end-to-end tests: messages as the gateway hands them on,
DKIM signing and ARC sealing, a policy builder, and readers for stored messages and the trace."""

from __future__ import annotations

import email.utils

import rig
from mxgate.auth.arc import seal_arc
from mxgate.auth.dkim import sign_dkim

ORIGINAL_IP = "203.0.113.7"  # fabrikam's real outbound server (RFC 5737 documentation range)
DNS_TIMEOUT = 0.5


def policy(**connector: object) -> str:
    """The guide's policy with enhanced-filtering (or organisation) settings added."""
    org = {k[4:]: v for k, v in connector.items() if k.startswith("org_")}
    conn = {k: v for k, v in connector.items() if not k.startswith("org_")}
    text = rig.GUIDE_POLICY
    if org:
        lines = "".join(f"{k} = {_toml(v)}\n" for k, v in org.items())
        text = text.replace('authserv_id = "mx.contoso.test"\n', 'authserv_id = "mx.contoso.test"\n' + lines)
    return text + "".join(f"{k} = {_toml(v)}\n" for k, v in conn.items())


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return f'"{value}"'


def dns_section(server, timeout: float = DNS_TIMEOUT) -> dict:
    return {"servers": [server.address], "timeout": timeout}


def body(author: str = "ceo@fabrikam.test", subject: str = "quarterly numbers", extra: bytes = b"") -> bytes:
    return (f"From: {author}\r\nTo: alice@contoso.test\r\nSubject: {subject}\r\n"
            f"Date: Fri, 27 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{email.utils.make_msgid()[1:-1]}>\r\n").encode() \
        + extra + b"\r\nHello Alice.\r\n"


def dkim_signed(message: bytes, pem: bytes, domain: str = "fabrikam.test") -> bytes:
    return sign_dkim(message, domain, "sel", pem) + message


LIST_RESULTS = "spf=pass smtp.mailfrom=fabrikam.test; dkim=none; arc=none"


def arc_sealed(message: bytes, pem: bytes, results: str = LIST_RESULTS) -> bytes:
    """What a mailing list at lists.test (which changed nothing) hands on: its results + an ARC set."""
    ar = f"lists.test; {results}"
    return seal_arc(message, "lists.test", "lists.test", "arc", pem, ar) + f"Authentication-Results: {ar}\r\n".encode() + message


def received(ip: str, helo: str, by: str = "gw.contoso.test") -> bytes:
    return (f"Received: from {helo} ({helo} [{ip}])\r\n\tby {by} (mxgate) with ESMTPS id 4f1a2b;\r\n"
            f"\tFri, 27 Nov 2026 12:00:01 +0000\r\n").encode()


def via_gateway(message: bytes, ip: str = ORIGINAL_IP, helo: str = "mail.fabrikam.test") -> bytes:
    """The message as the gateway relays it: its Received header names the original sender."""
    return received(ip, helo) + message


def deliver(node, data: bytes, sender: str = "sender@fabrikam.test", rcpts=("alice@contoso.test",)) -> dict:
    return rig.send_message("127.0.0.1", node.port(), source=rig.GATEWAY, sender=sender, rcpts=list(rcpts),
                            data=data, ehlo="gw.contoso.test")


def header_lines(stored: bytes, name: str) -> list[str]:
    """Unfolded values of every `name:` field in the stored message's header block."""
    head = stored.split(b"\r\n\r\n", 1)[0].decode()
    fields = head.replace("\r\n\t", " ").replace("\r\n ", " ").split("\r\n")
    return [f.split(":", 1)[1].strip() for f in fields if f.lower().startswith(name.lower() + ":")]


def trace_row(node, recipient: str = "alice@contoso.test") -> dict:
    node.trace.flush()
    rows = node.trace.search(recipient=recipient)
    assert rows, "no trace row"
    return rows[0]
