"""DSN builder: RFC 3464 structure parsed back with the stdlib email package."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import datetime, timezone

import pytest

from mxgate.queue.dsn import DsnError, FailedRecipient, build_dsn, original_header_block

ARRIVAL = datetime(2026, 11, 27, 10, 0, 0, tzinfo=timezone.utc)
NOW = datetime(2026, 11, 27, 10, 5, 0, tzinfo=timezone.utc)
ORIGINAL = b"From: alice@sender.example\r\nTo: bob@contoso.test\r\nSubject: quarterly\r\n\r\nsecret body\r\n"
BOB = FailedRecipient(
    "bob@contoso.test", "5.1.1", "smtp; 550 5.1.1 <bob@contoso.test>: user unknown", "mbx1.contoso.test"
)
CAROL = FailedRecipient("carol@contoso.test", "5.2.2", "smtp; 552 5.2.2 mailbox full", None)


def _build(**kw):
    args = dict(
        reporting_mta="gw.contoso.test",
        original_sender="alice@sender.example",
        original_envelope_id="env-42",
        failed=[BOB, CAROL],
        original_headers=ORIGINAL,
        arrival_date=ARRIVAL,
        date=NOW,
    )
    args.update(kw)
    return build_dsn(**args)


def test_structure_of_a_failure_report():
    raw = _build()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["To"].addresses[0].addr_spec == "alice@sender.example"
    assert b"\r\nTo: <alice@sender.example>\r\n" in raw
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@gw.contoso.test"
    assert msg["Date"].datetime == NOW
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    human = parts[0].get_content()
    assert "bob@contoso.test" in human and "user unknown" in human

    blocks = parts[1].get_payload()
    assert len(blocks) == 3  # per-message fields, then one block per recipient
    assert blocks[0]["Reporting-MTA"] == "dns; gw.contoso.test"
    assert blocks[0]["Original-Envelope-Id"] == "env-42"
    assert email.utils.parsedate_to_datetime(blocks[0]["Arrival-Date"]) == ARRIVAL
    bob, carol = blocks[1], blocks[2]
    assert bob["Final-Recipient"] == "rfc822; bob@contoso.test"
    assert bob["Action"] == "failed"
    assert bob["Status"] == "5.1.1"
    assert bob["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@contoso.test>: user unknown"
    assert bob["Remote-MTA"] == "dns; mbx1.contoso.test"
    assert carol["Status"] == "5.2.2" and carol["Remote-MTA"] is None

    headers = parts[2].get_payload()
    assert "Subject: quarterly" in headers
    assert "secret body" not in headers  # headers only, never the body


def test_crlf_only():
    raw = _build(original_headers=b"Subject: lf only\nX-A: 1\n\nbody\n")
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert b"Subject: lf only\r\nX-A: 1\r\n" in raw


@pytest.mark.parametrize("sender", ["", "<>", "  <>  "])
def test_never_bounce_a_bounce(sender):
    assert _build(original_sender=sender) is None


def test_delayed_report():
    until = datetime(2026, 12, 2, 10, 0, tzinfo=timezone.utc)
    rcpt = FailedRecipient("bob@contoso.test", "4.4.1", "smtp; 421 4.4.1 try later", will_retry_until=until)
    msg = email.message_from_bytes(_build(failed=[rcpt], action="delayed"), policy=email.policy.default)
    assert "Delayed" in msg["Subject"]
    block = list(msg.iter_parts())[1].get_payload()[1]
    assert block["Action"] == "delayed" and block["Status"] == "4.4.1"
    assert email.utils.parsedate_to_datetime(block["Will-Retry-Until"]) == until


def test_hostile_diagnostic_cannot_inject_fields():
    rcpt = FailedRecipient("bob@contoso.test", "5.0.0", "smtp; 550 bad\r\nAction: delivered\r\n\r\nX: \u00e9" + "z" * 2000)
    raw = _build(failed=[rcpt])
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    blocks = list(msg.iter_parts())[1].get_payload()
    assert len(blocks) == 2
    assert blocks[1]["Action"] == "failed"
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert raw.isascii()


def test_eight_bit_original_headers_are_declared():
    raw = _build(original_headers="Subject: caf\u00e9\r\n\r\n".encode("utf-8"))
    part = list(email.message_from_bytes(raw).walk())[-1]
    assert part["Content-Transfer-Encoding"] == "8bit"


def test_original_header_block_is_bounded_at_a_line():
    big = b"".join(b"X-Filler-%06d: %s\r\n" % (i, b"a" * 80) for i in range(3000)) + b"\r\nbody"
    block = original_header_block(big)
    assert len(block) <= 100 * 1024
    assert block.endswith(b"\r\n")
    assert re.fullmatch(rb"(X-Filler-\d{6}: a{80}\r\n)+", block)


def test_optional_fields_omitted():
    rcpt = FailedRecipient("bob@contoso.test", "5.4.7")  # expiry: no remote answer at all
    msg = email.message_from_bytes(_build(failed=[rcpt], original_envelope_id=None), policy=email.policy.default)
    blocks = list(msg.iter_parts())[1].get_payload()
    assert blocks[0]["Original-Envelope-Id"] is None
    assert blocks[1]["Diagnostic-Code"] is None and blocks[1]["Remote-MTA"] is None


@pytest.mark.parametrize(
    "kw",
    [
        {"action": "delivered"},
        {"failed": []},
        {"failed": [FailedRecipient("bob@contoso.test", "550")]},
        {"failed": [FailedRecipient("bob@x\r\nBcc: evil@x", "5.1.1")]},
        {"original_sender": "alice@x\r\nBcc: evil@x"},
        {"reporting_mta": "gw contoso"},
    ],
)
def test_invalid_input_is_refused(kw):
    with pytest.raises(DsnError):
        _build(**kw)


def test_utf8_addresses_give_an_rfc6533_report():
    """RFC 6533: non-ASCII addresses are reported in message/global-delivery-status with the
    "utf-8" address type, the headers as message/global-headers; ASCII reports are unchanged."""
    jorg = FailedRecipient("jörg@bücher.test", "5.1.1", "smtp; 550 5.1.1 unknown", None,
                           original_recipient="jörg@bücher.test")
    raw = _build(original_sender="zoë@sender.example", failed=[jorg, CAROL],
                 original_headers="From: zoë@sender.example\r\nSubject: grüße\r\n\r\nbody\r\n".encode())
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "global-delivery-status"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/global-delivery-status",
                                                     "message/global-headers"]
    assert "jörg@bücher.test" in parts[0].get_content()
    status = raw.decode("utf-8")
    assert "Final-Recipient: utf-8; jörg@bücher.test\r\n" in status
    assert "Original-Recipient: utf-8; jörg@bücher.test\r\n" in status
    assert "Final-Recipient: rfc822; carol@contoso.test\r\n" in status  # ASCII ones keep rfc822
    assert "To: <zoë@sender.example>\r\n" in status and "Subject: grüße" in status
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_ascii_report_stays_rfc3464():
    msg = email.message_from_bytes(_build(), policy=email.policy.default)
    assert msg.get_param("report-type") == "delivery-status"
    assert [p.get_content_type() for p in msg.iter_parts()][1] == "message/delivery-status"
