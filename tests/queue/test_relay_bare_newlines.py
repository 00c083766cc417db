"""The relay never sends a bare CR or LF (RFC 5321 §2.3.8): the count test agrees with the
look-around definition on every short string of CR, LF and text, and a real relay refuses one."""

from __future__ import annotations

import asyncio
import itertools
import re

from rig import RecordingSink
from mxgate.queue.outbound import tls_context_for
from mxgate.queue.relay import RelaySettings, has_bare_cr_or_lf, relay

DEFINITION = re.compile(rb"\r(?!\n)|(?<!\r)\n")  # a CR not before LF, an LF not after CR


def test_count_test_equals_the_definition_on_every_short_string():
    for n in range(9):
        for parts in itertools.product((b"\r", b"\n", b"a"), repeat=n):
            data = b"".join(parts)
            assert has_bare_cr_or_lf(data) == bool(DEFINITION.search(data)), data
    assert not has_bare_cr_or_lf(b"Subject: x\r\n\r\nbody\r\n" * 500)
    assert has_bare_cr_or_lf(b"Subject: x\r\n\r\nbody\r\n" * 500 + b"\n")
    assert has_bare_cr_or_lf(b"a\r\r\nb\r\n")  # CR CR LF: the first CR is bare


def test_a_message_with_a_bare_lf_is_refused_not_sent(test_ca):
    sink = RecordingSink(test_ca["server_cert"], test_ca["server_key"])
    try:
        settings = RelaySettings((sink.address,), tls_context_for("encryption_only", None))
        result = asyncio.run(relay(settings, "a@contoso.test", ["b@fabrikam.test"], b"Subject: x\r\n\r\nsmuggled\n.\r\n"))
        assert [(o.state, o.status) for o in result.outcomes] == [("failed", "5.6.0")]
        assert sink.messages == []
        ok = asyncio.run(relay(settings, "a@contoso.test", ["b@fabrikam.test"], b"Subject: x\r\n\r\nfine\r\n"))
        assert [o.state for o in ok.outcomes] == ["delivered"]
        assert len(sink.messages) == 1
    finally:
        sink.close()
