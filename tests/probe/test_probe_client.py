"""run_probe against real loopback servers: outcomes per stage, TLS, source binding, PROXY."""

from __future__ import annotations

import asyncio
import ipaddress
import struct
import time

import pytest

from probekit import ATTRIBUTION_REFUSAL, REFUSED_PEER, Script
from mxgate.names import parse_hostport
from mxgate.probe.client import ProbeOptions, run_probe
from mxgate.probe.raw import ATTACKS, RawScript, parse_raw_file, run_raw
from mxgate.probe.wire import PROXY_V2_SIGNATURE, Wire, _LineProtocol

RCPT = ("user@contoso.test",)


def opts(srv, **kw) -> ProbeOptions:
    kw.setdefault("rcpt_to", RCPT)
    kw.setdefault("timeout", 3.0)
    return ProbeOptions(host=srv.host, port=srv.port, **kw)


async def test_accept_without_send_stops_after_rcpt(smtpd):
    srv = smtpd()
    r = await run_probe(opts(srv))
    assert (r.outcome, r.stage, r.code) == ("accept", "done", 250)
    assert r.accepted_rcpts == RCPT and r.refused_rcpts == ()
    texts = [(ln.direction, ln.text) for ln in r.transcript]
    assert ("C", "RCPT TO:<user@contoso.test>") in texts
    assert ("C", "DATA") not in texts and texts[-2] == ("C", "QUIT")
    assert srv.handler.messages == []


async def test_send_delivers_generated_message(smtpd):
    srv = smtpd()
    r = await run_probe(opts(srv, send=True, subject="hello probe", body="line one\n.dot line\n"))
    assert (r.outcome, r.stage, r.code, r.enhanced) == ("accept", "done", 250, "2.0.0")
    [(sender, rcpts, content)] = srv.handler.messages
    assert sender == "probe@mxgate.invalid" and rcpts == RCPT
    assert b"Subject: hello probe\r\n" in content
    assert b"\r\n.dot line\r\n" in content  # dot-stuffing undone by the server: sent as "..dot"
    assert b"Message-ID: <" in content


async def test_transcript_has_monotonic_timings_and_every_line(smtpd):
    srv = smtpd()
    r = await run_probe(opts(srv))
    times = [ln.t for ln in r.transcript]
    assert times == sorted(times) and times[0] >= 0 and times[-1] <= r.duration
    server_lines = [ln.text for ln in r.transcript if ln.direction == "S"]
    assert server_lines[0].startswith("220 mx.test")
    assert "250-8BITMIME" in server_lines and "250 HELP" in server_lines  # multiline kept whole
    assert r.transcript[0].direction == "*" and "connected from 127.0.0.1:" in r.transcript[0].text


async def test_source_address_is_the_peer_the_server_sees(smtpd):
    srv = smtpd()
    r = await run_probe(opts(srv, source_address=REFUSED_PEER))
    assert srv.handler.peers == [REFUSED_PEER]
    assert (r.outcome, r.stage, r.code, r.enhanced) == ("reject", "rcpt", 550, "5.7.51")
    assert r.reply == ATTRIBUTION_REFUSAL[4:]
    assert r.refused_rcpts[0].address == RCPT[0] and r.refused_rcpts[0].code == 550


async def test_partial_refusal_is_a_refusal_and_nothing_is_sent(scripted):
    srv = scripted(Script(replies={"RCPT": b"550 5.1.1 unknown user\r\n"}))
    r = await run_probe(opts(srv, send=True, rcpt_to=("a@x.test", "b@x.test")))
    assert (r.outcome, r.stage, r.code, r.enhanced) == ("reject", "rcpt", 550, "5.1.1")
    assert len(r.refused_rcpts) == 2
    assert not any(line.startswith(b"DATA") for line in srv.handler.received)


@pytest.mark.parametrize("script, outcome, stage, code, enhanced", [
    (Script(greeting=b"554 5.7.1 no service for you\r\n"), "reject", "connect", 554, "5.7.1"),
    (Script(greeting=b"421 4.3.2 busy\r\n"), "tempfail", "connect", 421, "4.3.2"),
    (Script(replies={"EHLO": b"550 5.7.1 go away\r\n"}), "reject", "ehlo", 550, "5.7.1"),
    (Script(replies={"MAIL": b"553 5.1.8 bad sender\r\n"}), "reject", "mail", 553, "5.1.8"),
    (Script(replies={"MAIL": b"452 4.3.1 disk full\r\n"}), "tempfail", "mail", 452, "4.3.1"),
    (Script(replies={"RCPT": b"450-4.7.1 greylisted\r\n450 4.7.1 try later\r\n"}), "tempfail", "rcpt", 450, "4.7.1"),
    (Script(replies={"DATA": b"554 5.5.1 no valid recipients\r\n"}), "reject", "data", 554, "5.5.1"),
    (Script(data_end=b"550 5.7.1 content refused\r\n"), "reject", "data", 550, "5.7.1"),
    (Script(data_end=b"451 4.3.0 try later\r\n"), "tempfail", "data", 451, "4.3.0"),
    (Script(data_end=b"250 queued\r\n"), "accept", "done", 250, None),
])
async def test_outcome_and_stage_for_each_refusal(scripted, script, outcome, stage, code, enhanced):
    srv = scripted(script)
    r = await run_probe(opts(srv, send=True))
    assert (r.outcome, r.stage, r.code, r.enhanced) == (outcome, stage, code, enhanced)
    if outcome != "accept":
        assert any(ln.text == "QUIT" for ln in r.transcript)  # polite goodbye after a refusal


async def test_ehlo_not_understood_falls_back_to_helo(scripted):
    srv = scripted(Script(replies={"EHLO": b"502 5.5.1 what\r\n"}))
    r = await run_probe(opts(srv))
    assert r.outcome == "accept"
    assert srv.handler.received[1].startswith(b"HELO mxgate-probe.invalid")


async def test_connection_refused_is_an_error_at_connect(smtpd):
    port = smtpd().port
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed_port = s.getsockname()[1]
    s.close()  # bound then closed: nothing listens there
    r = await run_probe(ProbeOptions("127.0.0.1", closed_port, rcpt_to=RCPT, timeout=2))
    assert (r.outcome, r.stage, r.code) == ("error", "connect", None)
    assert "failed" in r.reply and port != closed_port


async def test_silent_server_times_out_at_connect(scripted):
    srv = scripted(Script(greeting=b""))
    r = await run_probe(opts(srv, timeout=0.3))
    assert (r.outcome, r.stage) == ("error", "connect") and "timed out" in r.reply


async def test_malformed_reply_is_an_error(scripted):
    srv = scripted(Script(replies={"MAIL": b"hello there\r\n"}))
    r = await run_probe(opts(srv))
    assert (r.outcome, r.stage) == ("error", "mail") and "malformed" in r.reply


async def test_starttls_verified_with_ca_gives_tls_info(smtpd, pki):
    srv = smtpd(tls=pki.server_context())
    r = await run_probe(opts(srv, ca_file=pki.ca_file, starttls="require"))
    assert r.outcome == "accept"
    assert r.tls is not None and r.tls.verified
    assert r.tls.version.startswith("TLSv1.") and r.tls.cipher
    assert "mx.test" in r.tls.sans and "127.0.0.1" in r.tls.sans
    assert r.tls.sha256 and len(r.tls.sha256.split(":")) == 32
    assert r.tls.not_after.startswith("3000-")
    ehlos = [i for i, ln in enumerate(r.transcript) if ln.text.startswith("EHLO")]
    tls_note = next(i for i, ln in enumerate(r.transcript) if ln.direction == "*" and "TLS" in ln.text)
    assert len(ehlos) == 2 and ehlos[0] < tls_note < ehlos[1]  # EHLO again after STARTTLS


async def test_starttls_wrong_ca_is_an_error_at_starttls(smtpd, pki):
    srv = smtpd(tls=pki.server_context())
    r = await run_probe(opts(srv, ca_file=pki.wrong_ca_file, starttls="auto"))
    assert (r.outcome, r.stage) == ("error", "starttls")
    assert "certificate verify failed" in r.reply
    assert srv.handler.peers == []  # never reached RCPT


async def test_starttls_require_without_offer_fails(smtpd):
    srv = smtpd()
    r = await run_probe(opts(srv, starttls="require"))
    assert (r.outcome, r.stage, r.tls) == ("error", "starttls", None)
    assert "does not offer STARTTLS" in r.reply


async def test_starttls_off_and_auto_without_offer_stay_clear(smtpd, pki):
    srv = smtpd(tls=pki.server_context())
    r = await run_probe(opts(srv, starttls="off"))
    assert r.outcome == "accept" and r.tls is None
    assert not any(ln.text == "STARTTLS" for ln in r.transcript)
    plain = smtpd()
    r2 = await run_probe(opts(plain, starttls="auto"))
    assert r2.outcome == "accept" and r2.tls is None


async def test_client_certificate_is_presented(smtpd, pki):
    srv = smtpd(tls=pki.server_context(require_client_cert=True))
    r = await run_probe(opts(srv, ca_file=pki.ca_file, client_cert=pki.client_pem))
    assert r.outcome == "accept"
    [cert] = srv.handler.client_certs
    assert ("DNS", "client.test") in cert["subjectAltName"]


async def test_missing_client_certificate_fails_at_starttls(smtpd, pki):
    srv = smtpd(tls=pki.server_context(require_client_cert=True))
    r = await run_probe(opts(srv, ca_file=pki.ca_file))
    assert (r.outcome, r.stage) == ("error", "starttls"), r
    assert srv.handler.peers == []


async def test_injected_bytes_after_starttls_220_are_discarded(scripted, pki):
    # CVE-2011-0411 client side: "250 injected" arrives in clear text with the 220.
    script = Script(tls=pki.server_context(), starttls_reply=b"220 go ahead\r\n250 injected\r\n",
                    replies={"MAIL": b"250 2.1.0 sender ok after tls\r\n"})
    srv = scripted(script)
    r = await run_probe(opts(srv, ca_file=pki.ca_file))
    assert r.outcome == "accept" and r.tls is not None
    server_lines = [ln.text for ln in r.transcript if ln.direction == "S"]
    assert "250 injected" not in server_lines
    assert "250 2.1.0 sender ok after tls" in server_lines
    note = next(ln.text for ln in r.transcript if "discarded" in ln.text)
    assert "CVE-2011-0411" in note and "250 injected" in note


async def test_ipv6_target(smtpd):
    srv = smtpd(host="::1")
    host, port = parse_hostport(srv.target, 25)
    r = await run_probe(ProbeOptions(host, port, rcpt_to=RCPT, timeout=3))
    assert r.outcome == "accept" and srv.handler.peers == ["::1"]


async def test_proxy_v1_header_bytes(scripted):
    script = Script(read_proxy=True)
    srv = scripted(script)
    r = await run_probe(opts(srv, proxy_source="192.0.2.7:4444"))
    assert r.outcome == "accept"
    assert script.proxy_header == f"PROXY TCP4 192.0.2.7 127.0.0.1 4444 {srv.port}\r\n".encode()
    assert script.received[0].startswith(b"EHLO ")  # the header is not taken as a command


async def test_proxy_v2_header_bytes_ipv6_claim(scripted):
    script = Script(read_proxy=True)
    srv = scripted(script)
    r = await run_probe(opts(srv, proxy_source="[2001:db8::7]:25000", proxy_version=2))
    assert r.outcome == "accept"
    h = script.proxy_header
    assert h[:12] == PROXY_V2_SIGNATURE and h[12] == 0x21 and h[13] == 0x21
    assert struct.unpack("!H", h[14:16])[0] == 36 and len(h) == 16 + 36
    assert h[16:32] == ipaddress.ip_address("2001:db8::7").packed
    assert h[32:48] == ipaddress.ip_address("::ffff:127.0.0.1").packed  # real dst, v4-mapped
    assert struct.unpack("!HH", h[48:52]) == (25000, srv.port)


async def test_proxy_v2_default_source_port_is_ours(scripted):
    script = Script(read_proxy=True)
    srv = scripted(script)
    r = await run_probe(opts(srv, proxy_source="198.51.100.9", proxy_version=2))
    h = script.proxy_header
    assert h[13] == 0x11 and len(h) == 16 + 12
    assert h[16:20] == bytes([198, 51, 100, 9]) and h[20:24] == bytes([127, 0, 0, 1])
    our_port = int(r.transcript[0].text.split(" ")[2].rsplit(":", 1)[1])
    assert struct.unpack("!HH", h[24:28]) == (our_port, srv.port)


async def test_raw_smuggle_sends_bytes_unchanged(scripted):
    script = Script()
    srv = scripted(script)
    result = await run_raw(opts(srv), ATTACKS["smuggle-lf"](opts(srv)), settle=0.2)
    assert result.error is None
    body = next(b for b in script.received if b"smuggled" in b)
    assert b"body\n.\nMAIL FROM:<ceo@bank.example>\r\n" in body
    assert result.replies[0] == (220,) and 250 in result.replies[-2]
    assert any("\\n.\\n" in ln.text for ln in result.transcript if ln.direction == "C")


async def test_raw_file_and_server_close(scripted):
    script = Script(replies={"XYZZY": b"421 4.7.0 go away\r\n"})
    srv = scripted(script)
    raw = parse_raw_file("# comment\nEHLO a\\rb\\r\\n\n<wait>\nQUIT\\r\\n\nXYZZY\\r\\n\n")
    assert raw == RawScript((b"EHLO a\rb\r\n", b"", b"QUIT\r\n", b"XYZZY\r\n"))
    result = await run_raw(opts(srv), raw, settle=0.2)
    assert script.received[0] == b"EHLO a\rb\r\n"
    assert result.replies[:3] == ((220,), (250,), ())
    assert result.closed_by_server


async def test_data_arriving_while_the_reader_arms_is_not_lost():
    # Regression: data delivered in the loop iteration where the reader starts waiting must
    # wake it at once, not after its timeout.
    proto = _LineProtocol()
    wire = Wire(None, proto, timeout=30.0, note=lambda d, t: None)
    started = time.monotonic()
    task = asyncio.ensure_future(wire.read_line())
    await asyncio.sleep(0)  # the reader runs up to its wait
    proto.data_received(b"220 hello\r\n")
    assert await task == b"220 hello\r\n"
    assert time.monotonic() - started < 10  # far below the 30 s timeout it must not wait for
