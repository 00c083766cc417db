"""PROXY protocol v1/v2 from a trusted load balancer (issue 10; adversarial.md §5): attribution
sees the real client address; the header is believed only from `trusted_proxies`."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from rig import ATTACKER, GATEWAY, RawSMTP, maildir_messages
from mxgate.smtp.proxy import ProxyHeaderError, parse_proxy_header

PROXY_HOST = "127.0.0.5"


def v1(src: str) -> bytes:
    return f"PROXY TCP4 {src} 127.0.0.1 40000 25\r\n".encode()


def v2(src: str) -> bytes:
    body = ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address("127.0.0.1").packed + struct.pack("!HH", 40000, 25)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def _deliver_through_proxy(n, header: bytes, source: str = PROXY_HOST):
    c = RawSMTP("127.0.0.1", n.port(), source)
    c.send(header)
    code, _ = c.greeting()
    assert code == 220
    c.cmd("EHLO lb.test"); c.starttls(); c.cmd("EHLO lb.test")
    c.cmd("MAIL FROM:<a@fabrikam.test>")
    reply = c.cmd("RCPT TO:<alice@contoso.test>")
    if reply[0] == 250:
        c.cmd("DATA")
        c.send(b"Subject: via proxy\r\n\r\nx\r\n.\r\n")
        reply = c.read_reply()
    c.close()
    return reply


@pytest.mark.parametrize("make", [v1, v2], ids=["v1", "v2"])
def test_trusted_proxy_header_gives_the_real_client_address(node_factory, make):
    n = node_factory(mailbox={"trusted_proxies": [PROXY_HOST]})
    assert _deliver_through_proxy(n, make(GATEWAY))[0] == 250
    code, text = _deliver_through_proxy(n, make(ATTACKER))
    assert code == 550 and "5.7.51" in text
    n.trace.flush()
    rejected = n.trace.search(status="Rejected")
    assert rejected[0]["from_ip"] == ATTACKER  # the trace names the real client, not the proxy
    assert b"[127.0.0.10]" in maildir_messages(n.home, "alice@contoso.test")[0]


def test_trusted_proxy_without_header_is_dropped(node_factory):
    n = node_factory(mailbox={"trusted_proxies": [PROXY_HOST]})
    with RawSMTP("127.0.0.1", n.port(), PROXY_HOST) as c:
        c.send(b"EHLO x\r\n")
        assert c.closed()


def test_header_from_untrusted_peer_is_not_believed(node_factory):
    n = node_factory(mailbox={"trusted_proxies": [PROXY_HOST]})
    with RawSMTP("127.0.0.1", n.port(), ATTACKER) as c:
        c.greeting()
        assert c.cmd("PROXY TCP4 127.0.0.10 127.0.0.1 40000 25")[0] == 500


def test_parser_edge_cases():
    assert parse_proxy_header(b"PROXY TCP4 1.2.3.4") is None
    assert parse_proxy_header(b"\r\n\r\n\x00") is None
    got = parse_proxy_header(v1("192.0.2.7") + b"EHLO x\r\n")
    assert str(got.source_ip) == "192.0.2.7" and got.consumed == len(v1("192.0.2.7"))
    assert parse_proxy_header(b"PROXY UNKNOWN\r\n").source_ip is None
    for bad in (b"PROXY TCP4 1.2.3.4 5.6.7.8 x 25\r\n", b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", b"EHLO x\r\n",
                b"PROXY " + b"9" * 200):
        with pytest.raises(ProxyHeaderError):
            parse_proxy_header(bad)
