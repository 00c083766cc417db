"""AUTH on a listener that does not offer it (the anonymous inbound listeners of both roles,
adversarial.md §7): answered as the unknown command it is there, and counted like one, so a
password sprayer repeating AUTH meets the session's error limit (421 and close) as an
unknown-command flood does (Postfix counts "authentication not enabled" too)."""

from __future__ import annotations

import pytest

from rig import ATTACKER, RawSMTP


@pytest.mark.parametrize("line", ["AUTH LOGIN", "AUTH PLAIN AGF1c2VyAHBhc3M=", "AUTH"])
def test_repeated_auth_where_it_is_not_offered_meets_the_error_limit(node_factory, line):
    n = node_factory(mailbox={"limits": {"max_errors": 5}})
    with RawSMTP("127.0.0.1", n.port(), ATTACKER) as c:
        c.greeting()
        c.cmd("EHLO sprayer.test")
        codes = [c.cmd(line)[0] for _ in range(5)]
        assert codes == [500] * 4 + [421]
        assert c.closed()
