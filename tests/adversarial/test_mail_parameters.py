"""ESMTP parameters of MAIL FROM from an attacker's side (RFC 5321 §4.1.1.11, RFC 1870 SIZE,
RFC 6152 BODY, RFC 6531 SMTPUTF8): a value outside the extension's grammar is a syntax error
(501) answered on the same connection, which goes on serving; never a dropped connection."""

from __future__ import annotations

import pytest

from rig import GATEWAY, RawSMTP


def _ready(n) -> RawSMTP:
    c = RawSMTP("127.0.0.1", n.port(), GATEWAY)
    c.greeting(); c.cmd("EHLO gw.test"); c.starttls(); c.cmd("EHLO gw.test")
    return c


# RFC 1870 §3: size-value ::= 1*20DIGIT, and DIGIT is ASCII (RFC 5234): "²" and "٣" are digits
# to Python's str.isdigit, not to SMTP.
@pytest.mark.parametrize("param", ["SIZE=\u00b2", "SIZE=\u0663", "SIZE=1\u00b9", "SIZE=" + "1" * 21, "SIZE=",
                                   "SIZE=-1", "SIZE=+5",
                                   # RFC 6152 §2: body-value ::= "7BIT" / "8BITMIME" (BINARYMIME is not offered)
                                   "BODY=junk", "BODY=", "BODY=BINARYMIME",
                                   # RFC 6531 §3.4: SMTPUTF8 takes no value
                                   "SMTPUTF8=yes"])
def test_a_parameter_value_outside_its_grammar_is_501_and_the_session_serves_on(node_factory, param):
    n = node_factory()
    with _ready(n) as c:
        code, text = c.cmd(f"MAIL FROM:<a@fabrikam.test> {param}")
        assert code == 501 and "5.5.4" in text
        assert c.cmd("MAIL FROM:<a@fabrikam.test> SIZE=1000 BODY=8bitmime")[0] == 250


@pytest.mark.parametrize("param", ["SIZE=0", "SIZE=00000000000000001000", "BODY=7BIT", "BODY=8BITMIME", "SMTPUTF8"])
def test_every_value_the_grammar_allows_is_accepted(node_factory, param):
    n = node_factory()
    with _ready(n) as c:
        assert c.cmd(f"MAIL FROM:<a@fabrikam.test> {param}")[0] == 250


@pytest.mark.parametrize("param", ["AUTH=<>", "RET=HDRS", "XFOO=1"])
def test_a_parameter_of_an_extension_not_offered_is_555(node_factory, param):
    # RFC 5321 §4.1.1.11; the anonymous listener offers no AUTH (RFC 4954 §5 binds only servers that do)
    n = node_factory()
    with _ready(n) as c:
        code, text = c.cmd(f"MAIL FROM:<a@fabrikam.test> {param}")
        assert code == 555


# RFC 5321 §2.4: commands are ASCII. Python's str.upper() maps some non-ASCII letters onto ASCII
# ("ı" → "I", "ſ" → "S", "ﬆ" → "ST"), which made "MAıL" a MAIL and "ﬆARTTLS" a STARTTLS: a verb
# (or parameter name) a filter in front of the server would not recognise.
@pytest.mark.parametrize("line", ["MA\u0131L FROM:<a@fabrikam.test>", "\ufb06ARTTLS", "QU\u0131T",
                                  "MAIL FROM:<a@fabrikam.test> \u017fIZE=10"])
def test_a_command_or_parameter_spelled_with_non_ascii_letters_is_not_obeyed(node_factory, line):
    n = node_factory()
    with _ready(n) as c:
        code, _ = c.cmd(line)
        assert code in (500, 555)
        assert c.cmd("NOOP")[0] == 250
