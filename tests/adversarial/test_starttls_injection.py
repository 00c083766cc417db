"""adversarial.md §3: STARTTLS command injection (CVE-2011-0411, CVE-2024-34083), server side."""

from __future__ import annotations

import socket
import ssl

from rig import GATEWAY, RawSMTP


def test_commands_pipelined_after_starttls_are_discarded(node_factory):
    n = node_factory()
    c = RawSMTP("127.0.0.1", n.port(), GATEWAY)
    c.greeting(); c.cmd("EHLO x")
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n")  # one write
    code, _ = c.read_reply()
    assert code == 220
    ctx = ssl._create_unverified_context()
    c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost")
    # No reply to the injected MAIL arrives inside TLS: the first reply we get answers our RCPT.
    code, text = c.cmd("RCPT TO:<alice@contoso.test>")
    assert code == 503, text
    code, text = c.cmd("MAIL FROM:<a@fabrikam.test>")  # no EHLO after TLS yet
    assert code == 503 and "EHLO" in text
    code, ehlo = c.cmd("EHLO x")
    assert "STARTTLS" not in ehlo  # RFC 3207 §4.2: not offered again
    assert c.cmd("STARTTLS")[0] == 503
    c.close()


def test_plaintext_after_starttls_does_not_reach_the_command_loop(node_factory):
    """A client that sends cleartext instead of a ClientHello gets no SMTP reply, only a failed handshake."""
    n = node_factory()
    s = socket.create_connection(("127.0.0.1", n.port()))
    s.settimeout(3)
    s.recv(1024)
    s.sendall(b"EHLO x\r\n")
    s.recv(4096)
    s.sendall(b"STARTTLS\r\n")
    assert s.recv(1024).startswith(b"220")
    s.sendall(b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<alice@contoso.test>\r\n")
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionError):
        pass
    assert b"250" not in data and b"503" not in data  # TLS alert bytes at most, never an SMTP reply
    s.close()
