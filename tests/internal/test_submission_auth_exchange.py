"""The AUTH exchange's framing from an attacker's side (RFC 4954): a response line the server will
not take ends the exchange with one reply, and the commands that follow are commands again — the
session never reads a client's next command as a SASL response (nor the other way round)."""

from __future__ import annotations

import base64

import pytest

import rig
from rig import RawSMTP, free_port

from mxgate.auth.credentials import set_mailbox_password

PASSWORD = "alice's long password"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def submission_port(node_factory):
    n = node_factory(rig.GUIDE_POLICY, roles={"mailbox": True, "submission": True},
                     submission={"listen": [f"127.0.0.1:{free_port()}"]})
    set_mailbox_password(n.node.engine, n.node.policy_store.current().policy, "alice@contoso.test", PASSWORD)
    return n.port("submission")


def _ready(port: int) -> RawSMTP:
    c = RawSMTP("127.0.0.1", port)
    assert c.greeting()[0] == 220
    c.cmd("EHLO client.test")
    c.starttls()
    c.cmd("EHLO client.test")
    return c


@pytest.mark.parametrize("opening", [["AUTH PLAIN"], ["AUTH LOGIN"], ["AUTH LOGIN", _b64("alice@contoso.test")]])
def test_an_over_long_response_line_fails_the_exchange_and_the_next_line_is_a_command(submission_port, opening):
    # RFC 4954 §6: "500 5.5.6 Authentication Exchange line is too long" fails the AUTH command.
    with _ready(submission_port) as c:
        for line in opening:
            assert c.cmd(line)[0] == 334
        code, text = c.cmd("A" * 600)
        assert (code, text.split()[1]) == (500, "5.5.6")
        assert c.cmd("NOOP")[0] == 250  # a command again, not read as the SASL response
        # and a new exchange works from the start
        assert c.cmd("AUTH PLAIN " + _b64(f"\0alice@contoso.test\0{PASSWORD}"))[0] == 235


def _authenticated(port: int) -> RawSMTP:
    c = _ready(port)
    assert c.cmd("AUTH PLAIN " + _b64(f"\0alice@contoso.test\0{PASSWORD}"))[0] == 235
    return c


@pytest.mark.parametrize("value", ["<>", "alice+40contoso.test", "<alice+40contoso.test>"])
def test_the_auth_parameter_of_mail_is_accepted_where_auth_is_offered(submission_port, value):
    """RFC 4954 §5: a server that offers AUTH must accept a syntactically valid AUTH= on MAIL FROM
    (an authenticated relay such as Exim sends AUTH=<>); it is not believed, only accepted."""
    with _authenticated(submission_port) as c:
        assert c.cmd(f"MAIL FROM:<alice@contoso.test> AUTH={value}")[0] == 250
        assert c.cmd("RCPT TO:<bob@contoso.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(rig.simple_message("with AUTH=", sender="alice@contoso.test", to="bob@contoso.test") + b".\r\n")
        assert c.read_reply()[0] == 250


@pytest.mark.parametrize("value", ["", "a+zz", "a=b", "a+4"])
def test_an_auth_parameter_that_is_not_xtext_is_a_syntax_error(submission_port, value):
    with _authenticated(submission_port) as c:
        code, text = c.cmd(f"MAIL FROM:<alice@contoso.test> AUTH={value}")
        assert (code, text.split()[1]) == (501, "5.5.4")
        assert c.cmd("MAIL FROM:<alice@contoso.test>")[0] == 250
