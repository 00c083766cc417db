"""Issue 14, "Gateway checks fail safe": an attacker's message that breaks or overloads a check is
never passed for it. End to end through a running gateway (real sockets), plus the limits' units
in tests/gateway/test_mimewalk.py."""

from __future__ import annotations

import base64
import io
import zipfile

import pytest
from gwkit import gw_port
from rig import INTERNET, send_message

from mxgate.smtp.replies import REPLIES

HEAD = (b"From: s@fabrikam.test\r\nTo: alice@contoso.test\r\nSubject: files\r\nDate: Fri, 27 Nov 2026 12:00:00 +0000\r\n"
        b"Message-ID: <f@fabrikam.test>\r\nMIME-Version: 1.0\r\n")


def attachment(name: str, payload: bytes) -> bytes:
    b64 = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return (b"Content-Type: application/octet-stream; name=\"" + name.encode() + b"\"\r\n"
            b"Content-Disposition: attachment; filename=\"" + name.encode() + b"\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + b64)


def nested_around(inner: bytes, depth: int) -> bytes:
    """`inner` (a MIME entity) wrapped in `depth` levels of multipart/mixed."""
    body = inner
    for i in range(depth):
        b = b"L%d" % i
        body = b"Content-Type: multipart/mixed; boundary=" + b + b"\r\n\r\n--" + b + b"\r\n" + body + b"\r\n--" + b + b"--\r\n"
    return HEAD + body


def zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for n, d in members.items():
            z.writestr(n, d)
    return buf.getvalue()


def send(gw, data: bytes):
    return send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="s@fabrikam.test",
                        rcpts=["alice@contoso.test"], data=data)


def refused_reason(gw) -> dict:
    gw.trace.flush()
    [row] = [r for r in gw.trace.search(status="Rejected") if r["reason"] != "queued"][-1:]
    return row


UNINSPECTABLE = (554, str(REPLIES["content-uninspectable"]))


def test_exe_under_1000_multipart_levels_is_not_passed(make_gateway):
    """The issue's example: 1,000 nested multiparts once made the check raise, the error counted as
    "off", and the gateway said 250 with a blocked .exe inside."""
    gw = make_gateway()
    r = send(gw, nested_around(attachment("setup.exe", b"MZ" + b"\0" * 64), 1000))
    assert r["end"] == UNINSPECTABLE
    assert "mime-depth" in str(refused_reason(gw))


def test_exe_just_past_the_depth_limit_is_not_passed_and_one_level_less_is_judged(make_gateway):
    from mxgate.filters.mimewalk import LIMITS
    gw = make_gateway()
    exe = attachment("setup.exe", b"MZ" + b"\0" * 64)
    assert send(gw, nested_around(exe, LIMITS.depth + 1))["end"] == UNINSPECTABLE
    # Within the limit the walk reaches the file and the attachment rule itself refuses it.
    assert send(gw, nested_around(exe, LIMITS.depth - 1))["end"] == (554, str(REPLIES["blocked-attachment"]))


def test_exe_after_the_part_limit_is_not_passed(make_gateway):
    """Once the walk judged the first 500 parts and ignored the rest: a file hidden after them passed."""
    from mxgate.filters.mimewalk import LIMITS
    gw = make_gateway()
    parts = b"".join(b"--P\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(LIMITS.parts + 1))
    data = HEAD + b"Content-Type: multipart/mixed; boundary=P\r\n\r\n" + parts + b"--P\r\n" + \
        attachment("setup.exe", b"MZ") + b"\r\n--P--\r\n"
    assert send(gw, data)["end"] == UNINSPECTABLE
    assert "mime-parts" in str(refused_reason(gw))


def test_zip_bomb_is_refused(make_gateway):
    """A zip of a few tens of KB whose members inflate to 3 x 20 MB of zeros."""
    bomb = zip_of({f"part{i}.bin": bytes(20 * 1024 * 1024) for i in range(3)})
    assert len(bomb) < 100 * 1024
    gw = make_gateway()
    data = HEAD + b"Content-Type: multipart/mixed; boundary=Z\r\n\r\n--Z\r\n" + attachment("docs.zip", bomb) + b"\r\n--Z--\r\n"
    assert send(gw, data)["end"] == UNINSPECTABLE
    assert "archive-ratio" in str(refused_reason(gw))


def test_nested_zip_bomb_is_refused(make_gateway):
    inner = zip_of({"zeros.bin": bytes(30 * 1024 * 1024)})
    outer = zip_of({f"inner{i}.zip": inner for i in range(4)})
    gw = make_gateway()
    data = HEAD + b"Content-Type: multipart/mixed; boundary=Z\r\n\r\n--Z\r\n" + attachment("docs.zip", outer) + b"\r\n--Z--\r\n"
    assert send(gw, data)["end"] == UNINSPECTABLE


def test_on_error_is_separate_from_on_timeout_and_can_be_set_to_tempfail(make_gateway):
    gw = make_gateway('[gateway.attachments]\non_error = "tempfail"\non_timeout = "open"\n')
    r = send(gw, nested_around(attachment("setup.exe", b"MZ"), 1000))
    assert r["end"] == (451, str(REPLIES["check-tempfail"]))


def test_on_error_open_is_an_explicit_operator_choice(make_gateway, mailbox):
    """Only an operator who writes on_error = "open" gets the old behaviour, and the trace says so."""
    gw = make_gateway('[gateway.attachments]\non_error = "open"\n')
    r = send(gw, nested_around(b"Content-Type: text/plain\r\n\r\nhi\r\n", 1000))
    assert r["end"][0] == 250



@pytest.mark.parametrize("exc", [RecursionError("maximum recursion depth exceeded"), ValueError("library surprise")])
def test_an_exception_inside_any_check_is_a_451_never_a_pass(make_gateway, monkeypatch, exc):
    """A check that raises (here DKIM, on every message) makes the message wait, not pass unchecked."""
    from mxgate.filters import dkim

    def broken(*args):
        raise exc

    monkeypatch.setattr(dkim, "gather", broken)
    gw = make_gateway()
    from rig import simple_message
    r = send(gw, simple_message(sender="s@fabrikam.test"))
    assert r["end"] == (451, str(REPLIES["check-tempfail"]))
    gw.trace.flush()
    [row] = gw.trace.search(status="Deferred")[-1:] or gw.trace.search(status="Rejected")[-1:]
    assert type(exc).__name__ in str(row)


# --- the pure rule: what an error or a timeout means ------------------------------------------

from mxgate.filters.pipeline import decide_message, with_failure_policy  # noqa: E402
from mxgate.filters.result import ERROR, PASS, TEMPERROR, TIMEOUT, CheckResult  # noqa: E402
from mxgate.policy.gateway_checks import CheckSettings, DEFAULTS, validate_gateway_checks  # noqa: E402


def _cfg(name="attachments", **over):
    return CheckSettings(name, {**DEFAULTS[name], **over})


@pytest.mark.parametrize("outcome,on_timeout,on_error,action,reason", [
    (ERROR, "open", "tempfail", "tempfail", "check-tempfail"),
    (ERROR, "open", "reject", "reject", "content-uninspectable"),
    (ERROR, "open", "quarantine", "quarantine", "quarantined"),
    (ERROR, "closed", "open", "off", "check-tempfail"),  # on_timeout never decides an error
    (TIMEOUT, "open", "reject", "off", "check-tempfail"),  # and on_error never decides a timeout
    (TIMEOUT, "closed", "open", "tempfail", "check-tempfail"),
    (TEMPERROR, "closed", "reject", "tempfail", "check-tempfail"),  # a DNS temperror is like a timeout
    (PASS, "closed", "reject", "off", ""),
])
def test_failure_policy_table(outcome, on_timeout, on_error, action, reason):
    r = with_failure_policy(CheckResult("attachments", outcome), _cfg(on_timeout=on_timeout, on_error=on_error))
    assert (r.action, r.reason) == (action, reason)


def test_defaults_never_pass_a_broken_blocking_check():
    for name, defaults in DEFAULTS.items():
        assert defaults["on_error"] != "open", name
    assert DEFAULTS["attachments"]["on_error"] == "reject" and DEFAULTS["attachments"]["on_timeout"] == "closed"
    assert DEFAULTS["clamd"]["on_timeout"] == "closed"
    broken = with_failure_policy(CheckResult("attachments", ERROR, detail="mime-depth"), _cfg())
    outcome = decide_message({"attachments": broken}, None)
    assert outcome.verdict.refused and outcome.verdict.reason == "content-uninspectable"


def test_on_error_values_are_validated():
    class Gw:
        checks = [("attachments", (("on_error", "maybe"),))]

    [issue] = validate_gateway_checks(Gw())
    assert (issue.field, issue.rule) == ("on_error", "invalid-value")
