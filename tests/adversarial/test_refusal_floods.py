"""Refusal floods (adversarial.md §7 and §9 "Floods: refused commands count toward the session's
error limit", as Postfix's smtpd_hard_error_limit): a client repeating a command the server refuses
meets 421 and a closed connection at [limits] max_errors, whichever command it repeats — an
unknown one, AUTH where it is not offered, a refused RCPT (tests/trace), or a refused MAIL. Each
refused MAIL costs a log line and a trace lookup; without the limit one session could write them
for its whole lifetime."""

from __future__ import annotations

import pytest

import rig
from rig import ATTACKER, GATEWAY, RawSMTP, free_port

LIMIT = {"limits": {"max_errors": 5}}


@pytest.mark.parametrize("line", ["AUTH LOGIN", "AUTH PLAIN AGF1c2VyAHBhc3M=", "AUTH"])
def test_repeated_auth_where_it_is_not_offered_meets_the_error_limit(node_factory, line):
    """AUTH on a listener that does not offer it (the anonymous inbound listeners of both roles)
    is the unknown command it is there, and counted like one: a password sprayer meets 421."""
    n = node_factory(mailbox=LIMIT)
    with RawSMTP("127.0.0.1", n.port(), ATTACKER) as c:
        c.greeting()
        c.cmd("EHLO sprayer.test")
        codes = [c.cmd(line)[0] for _ in range(5)]
        assert codes == [500] * 4 + [421]
        assert c.closed()


def test_repeated_mail_refused_by_policy_meets_the_error_limit(node_factory):
    # The guide's partner connector requires TLS from the gateway: MAIL in clear text is 530 5.7.0.
    n = node_factory(mailbox=LIMIT)
    with RawSMTP("127.0.0.1", n.port(), GATEWAY) as c:
        c.greeting()
        c.cmd("EHLO gw.test")
        codes = [c.cmd("MAIL FROM:<a@fabrikam.test>")[0] for _ in range(5)]
        assert codes == [530] * 5  # the fifth refusal, then the limit's 421 (as for RCPT, tests/trace)
        assert c.read_reply()[0] == 421 and c.closed()


def test_repeated_mail_without_authentication_on_submission_meets_the_error_limit(node_factory):
    n = node_factory(rig.GUIDE_POLICY, roles={"mailbox": True, "submission": True},
                     submission={"listen": [f"127.0.0.1:{free_port()}"], **LIMIT})
    with RawSMTP("127.0.0.1", n.port("submission")) as c:
        c.greeting()
        c.cmd("EHLO client.test")
        c.starttls()
        c.cmd("EHLO client.test")
        codes = [c.cmd("MAIL FROM:<alice@contoso.test>")[0] for _ in range(5)]
        assert codes == [530] * 5  # the fifth refusal, then the limit's 421 (as for RCPT, tests/trace)
        assert c.read_reply()[0] == 421 and c.closed()
