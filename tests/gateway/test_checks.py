"""Issue 5, must-show 2: each gateway check fires in one test and passes in another, against a real
DNS server on loopback (SPF, DKIM, DMARC, DNSBL, rDNS) and a real clamd (EICAR)."""

from __future__ import annotations

import base64
import io
import zipfile

import pytest
from gwkit import EICAR, gw_port
from rig import INTERNET, RawSMTP, maildir_messages, send_message, simple_message, wait_until

from mxgate.auth.dkim import generate_dkim_key, sign_dkim
from mxgate.smtp.replies import REPLIES

REV = "77.0.0.127"  # 127.0.0.77 reversed (RFC 5782)


def send(gw, data=None, sender="sender@fabrikam.test", rcpt="alice@contoso.test", source=INTERNET):
    return send_message("127.0.0.10", gw_port(gw), source=source, sender=sender, rcpts=[rcpt],
                        data=data or simple_message(sender=sender))


def delivered(mailbox, address="alice@contoso.test", n=1):
    return wait_until(lambda: len(maildir_messages(mailbox.home, address)) >= n, timeout=10)


# --- SPF ----------------------------------------------------------------------------------------

def test_spf_fail_rejects(make_gateway, dns):
    dns.add("fabrikam.test", "TXT", "v=spf1 ip4:192.0.2.1 -all")
    gw = make_gateway('[gateway.spf]\naction = "reject"\n')
    r = send(gw)
    assert r["end"] == (550, str(REPLIES["spf-fail"]))


def test_spf_pass_accepts(make_gateway, mailbox, dns):
    dns.add("fabrikam.test", "TXT", "v=spf1 ip4:127.0.0.77 -all")
    gw = make_gateway('[gateway.spf]\naction = "reject"\n')
    assert send(gw)["end"][0] == 250 and delivered(mailbox)


def test_spf_dns_timeout_fails_closed_with_451(make_gateway, dns):
    gw = make_gateway('[gateway.spf]\naction = "reject"\ntimeout = 0.5\non_timeout = "closed"\n')
    dns.set_delay(1.5)
    try:
        r = send(gw)
    finally:
        dns.set_delay(0)
    assert r["end"] == (451, str(REPLIES["check-tempfail"]))


# --- DKIM ---------------------------------------------------------------------------------------

def _signed(dns, tamper: bool) -> bytes:
    key, txt = generate_dkim_key(1024)
    dns.add("sel._domainkey.fabrikam.test", "TXT", txt)
    msg = simple_message(subject="signed")
    sig = sign_dkim(msg, "fabrikam.test", "sel", key)
    out = sig + msg
    return out.replace(b"Hello.", b"Hell0.") if tamper else out


def test_dkim_bad_signature_rejects(make_gateway, dns):
    gw = make_gateway('[gateway.dkim]\naction = "reject"\n')
    assert send(gw, _signed(dns, tamper=True))["end"] == (550, str(REPLIES["dkim-fail"]))


def test_dkim_good_signature_accepts(make_gateway, mailbox, dns):
    gw = make_gateway('[gateway.dkim]\naction = "reject"\n')
    assert send(gw, _signed(dns, tamper=False))["end"][0] == 250 and delivered(mailbox)
    [stored] = maildir_messages(mailbox.home, "alice@contoso.test")
    assert b"gw.mxgate.test; spf=none" in stored and b"dkim=pass header.d=fabrikam.test" in stored


# --- DMARC (the sender's policy is honoured) ------------------------------------------------------

def test_dmarc_p_reject_rejects(make_gateway, dns):
    dns.add("fabrikam.test", "TXT", "v=spf1 ip4:192.0.2.1 -all")
    dns.add("_dmarc.fabrikam.test", "TXT", "v=DMARC1; p=reject")
    gw = make_gateway()  # defaults: spf tags, dmarc rejects on p=reject
    assert send(gw)["end"] == (550, str(REPLIES["dmarc-policy"]))


def test_dmarc_p_quarantine_quarantines(make_gateway, mailbox, dns):
    dns.add("fabrikam.test", "TXT", "v=spf1 ip4:192.0.2.1 -all")
    dns.add("_dmarc.fabrikam.test", "TXT", "v=DMARC1; p=quarantine")
    gw = make_gateway()
    assert send(gw)["end"] == (250, str(REPLIES["quarantined"]))
    from sqlalchemy import select

    from mxgate.store.schema import quarantine
    with gw.node.engine.connect() as c:
        rows = c.execute(select(quarantine.c.reason, quarantine.c.sender)).all()
    assert rows == [("dmarc", "sender@fabrikam.test")]
    assert maildir_messages(mailbox.home, "alice@contoso.test") == []


def test_dmarc_aligned_spf_pass_accepts(make_gateway, mailbox, dns):
    dns.add("fabrikam.test", "TXT", "v=spf1 ip4:127.0.0.77 -all")
    dns.add("_dmarc.fabrikam.test", "TXT", "v=DMARC1; p=reject")
    gw = make_gateway()
    assert send(gw)["end"][0] == 250 and delivered(mailbox)
    assert b"dmarc=pass" in maildir_messages(mailbox.home, "alice@contoso.test")[0]


# --- DNSBL / DNSWL --------------------------------------------------------------------------------

def test_dnsbl_listed_ip_rejected(make_gateway, dns):
    dns.add(f"{REV}.zen.example.test", "A", "127.0.0.2")
    gw = make_gateway('[gateway.dnsbl]\nzones = ["zen.example.test"]\n')
    assert send(gw)["end"] == (554, str(REPLIES["dnsbl"]))


def test_dnsbl_unlisted_or_allow_listed_ip_accepted(make_gateway, mailbox, dns):
    dns.add(f"{REV}.zen.example.test", "A", "127.0.0.2")
    dns.add(f"{REV}.wl.example.test", "A", "127.0.10.0")
    gw = make_gateway('[gateway.dnsbl]\nzones = ["zen.example.test"]\nallow_zones = ["wl.example.test"]\n')
    assert send(gw)["end"][0] == 250 and delivered(mailbox)
    gw2 = make_gateway('[gateway.dnsbl]\nzones = ["other.example.test"]\n')
    assert send(gw2)["end"][0] == 250


# --- reverse DNS ---------------------------------------------------------------------------------

def test_rdns_missing_rejected(make_gateway, dns):
    gw = make_gateway('[gateway.rdns]\naction = "reject"\n')
    assert send(gw)["end"] == (550, str(REPLIES["rdns-failed"]))


def test_rdns_forward_mismatch_tempfails_when_so_configured(make_gateway, dns):
    dns.add(f"{REV}.in-addr.arpa", "PTR", "mail.fabrikam.test.")
    dns.add("mail.fabrikam.test", "A", "192.0.2.9")
    gw = make_gateway('[gateway.rdns]\naction = "tempfail"\n')
    assert send(gw)["end"] == (450, str(REPLIES["rdns-missing"]))


def test_rdns_fcrdns_accepted(make_gateway, mailbox, dns):
    dns.add(f"{REV}.in-addr.arpa", "PTR", "mail.fabrikam.test.")
    dns.add("mail.fabrikam.test", "A", "127.0.0.77")
    gw = make_gateway('[gateway.rdns]\naction = "reject"\n')
    assert send(gw)["end"][0] == 250 and delivered(mailbox)


# --- rate limit ----------------------------------------------------------------------------------

def test_rate_limit_connections_and_messages(make_gateway):
    gw = make_gateway('[gateway.ratelimit]\nmax_connections = 2\nmax_messages = 1\nwindow = 60.0\n')
    with RawSMTP("127.0.0.10", gw_port(gw), INTERNET) as c:
        c.greeting()
        c.cmd("EHLO x")
        assert c.cmd("MAIL FROM:<a@fabrikam.test>")[0] == 250
        c.cmd("RSET")
        assert c.cmd("MAIL FROM:<a@fabrikam.test>") == (450, str(REPLIES["message-rate-limited"]))
    with RawSMTP("127.0.0.10", gw_port(gw), INTERNET) as c:
        assert c.greeting()[0] == 220
    with RawSMTP("127.0.0.10", gw_port(gw), INTERNET) as c:
        assert c.greeting() == (421, str(REPLIES["rate-limited"]))
    with RawSMTP("127.0.0.10", gw_port(gw), "127.0.0.78") as c:  # another address is not affected
        assert c.greeting()[0] == 220


# --- attachments ---------------------------------------------------------------------------------

def _with_attachment(name: str, payload: bytes) -> bytes:
    b64 = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return (b"From: s@fabrikam.test\r\nTo: alice@contoso.test\r\nSubject: file\r\nDate: Fri, 27 Nov 2026 12:00:00 +0000\r\n"
            b"Message-ID: <a@fabrikam.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
            b"--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--XX\r\n"
            b"Content-Type: application/octet-stream; name=\"" + name.encode() + b"\"\r\n"
            b"Content-Disposition: attachment; filename=\"" + name.encode() + b"\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + b64 + b"--XX--\r\n")


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in members.items():
            z.writestr(n, d)
    return buf.getvalue()


@pytest.mark.parametrize("name,payload", [
    ("setup.exe", b"anything"),  # by extension
    ("invoice.pdf", b"MZ\x90\x00" + b"\x00" * 60),  # by content: a PE file named .pdf
    ("docs.zip", _zip({"readme.txt": b"hi", "run.scr": b"x"})),  # extension inside a zip
    ("docs.zip", _zip({"inner.zip": _zip({"photo.jpg": b"\x7fELF\x02\x01"})})),  # content in a nested zip
])
def test_blocked_attachments_rejected(make_gateway, name, payload):
    gw = make_gateway()
    assert send(gw, _with_attachment(name, payload))["end"] == (554, str(REPLIES["blocked-attachment"]))


def test_allowed_attachment_and_clean_zip_accepted(make_gateway, mailbox):
    gw = make_gateway()
    assert send(gw, _with_attachment("report.pdf", b"%PDF-1.7 ..."))["end"][0] == 250
    assert send(gw, _with_attachment("docs.zip", _zip({"a.txt": b"hello"})))["end"][0] == 250
    assert delivered(mailbox, n=2)


# --- clamd (real daemon, local EICAR signature) -----------------------------------------------

def test_clamd_rejects_eicar(make_gateway, clamd_socket):
    gw = make_gateway(f'[gateway.clamd]\nsocket = "{clamd_socket}"\n')
    assert send(gw, _with_attachment("eicar.txt", EICAR))["end"] == (554, str(REPLIES["malware"]))
    gw.trace.flush()
    [row] = [r for r in gw.trace.search(status="Rejected") if r["reason"] == "malware"]
    assert "Mxgate.Test.EICAR" in str(row)


def test_clamd_clean_message_accepted(make_gateway, mailbox, clamd_socket):
    gw = make_gateway(f'[gateway.clamd]\nsocket = "{clamd_socket}"\n')
    assert send(gw)["end"][0] == 250 and delivered(mailbox)


def test_clamd_unreachable_fails_closed(make_gateway, tmp_path):
    gw = make_gateway(f'[gateway.clamd]\nsocket = "{tmp_path}/nothing.sock"\n')
    assert send(gw)["end"] == (451, str(REPLIES["check-tempfail"]))


# --- spam score ----------------------------------------------------------------------------------

SPAMMY = (b"From: \"paypal@paypal.test\" <x@fabrikam.test>\r\nTo: alice@contoso.test\r\n"
          b"Subject: URGENT PAYMENT WINNER\r\n\r\nClick here to verify your account, wire transfer now!\r\n")


def test_score_rejects_spammy_message(make_gateway):
    gw = make_gateway('[gateway.score]\nreject_threshold = 8.0\nquarantine_threshold = 7.0\n')
    r = send(gw, SPAMMY)
    assert r["end"] == (550, str(REPLIES["spam"]))


def test_score_tags_and_explains_each_rule(make_gateway, sink, test_ca):
    gw = make_gateway('[gateway.score]\nquarantine_threshold = 50.0\nreject_threshold = 60.0\n',
                      downstream=[sink.address], downstream_ca=test_ca["ca"])
    assert send(gw, SPAMMY)["end"] == (250, str(REPLIES["relayed"]))
    assert wait_until(lambda: sink.messages, timeout=10)
    head = sink.messages[0]["raw"].split(b"\r\n\r\n", 1)[0].decode()
    assert "X-MXGate-Spam-Verdict: tag" in head
    score = head.split("X-MXGate-Spam-Score: ", 1)[1].split("\r\nX-", 1)[0].split("\r\nReceived", 1)[0]
    for rule in ("SUBJECT_ALL_CAPS=+1.0", "FROM_DISPLAY_HAS_ADDRESS=+1.0", "MISSING_DATE=+1.0", "SPAM_PHRASE=+1.5"):
        assert rule in score.replace("\r\n ", " ")
    total = float(score.split()[0])
    assert 5.0 <= total < 50.0
    assert "X-MXGate-Checks: spf=pass" in head or "X-MXGate-Checks: spf=" in head


def test_clean_message_scores_low(make_gateway, mailbox, dns):
    dns.add("fabrikam.test", "TXT", "v=spf1 ip4:127.0.0.77 -all")
    gw = make_gateway()
    assert send(gw)["end"][0] == 250 and delivered(mailbox)


# --- greylisting (off by default) --------------------------------------------------------------

def test_greylist_off_by_default_and_first_attempt_refused_when_on(make_gateway, mailbox):
    gw = make_gateway()
    assert send(gw)["rcpt"][0][0] == 250
    gw2 = make_gateway('[gateway.greylist]\naction = "tempfail"\ndelay = 300\n')
    import time

    now = [time.time()]  # near real time: the cluster table ages its rows by the real clock
    gw2.node.roles["gateway"].clock = lambda: now[0]  # an injected clock: nothing sleeps
    r = send(gw2, rcpt="bob@contoso.test")
    assert r["rcpt"][0] == (451, str(REPLIES["greylisted"]))
    now[0] += 299
    assert send(gw2, rcpt="bob@contoso.test")["rcpt"][0][0] == 451  # too early
    now[0] += 2
    assert send(gw2, rcpt="bob@contoso.test")["end"][0] == 250 and delivered(mailbox, "bob@contoso.test")


def test_rate_limit_spares_the_organisations_own_mailbox_servers(make_gateway):
    """Outbound relaying from `[gateway] outbound_from` carries the whole organisation's mail."""
    gw = make_gateway('[gateway.ratelimit]\nmax_connections = 1\nmax_messages = 1\nwindow = 60.0\n',
                      outbound_from=["127.0.0.5/32"])
    for _ in range(3):
        with RawSMTP("127.0.0.10", gw_port(gw), "127.0.0.5") as c:
            assert c.greeting()[0] == 220
            c.cmd("EHLO mbx.contoso.test")
            assert c.cmd("MAIL FROM:<alice@contoso.test>")[0] == 250
            c.cmd("RSET")
            assert c.cmd("MAIL FROM:<alice@contoso.test>")[0] == 250
    with RawSMTP("127.0.0.10", gw_port(gw), INTERNET) as c:
        assert c.greeting()[0] == 220
    with RawSMTP("127.0.0.10", gw_port(gw), INTERNET) as c:  # an Internet peer is still limited
        assert c.greeting() == (421, str(REPLIES["rate-limited"]))
