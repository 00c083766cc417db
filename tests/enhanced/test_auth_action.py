"""The pure pieces of auth/pipeline.py: the action decision (golden cases), the skip-list stamp
and the pct= sample."""

from __future__ import annotations

import pytest

from auth_action_cases import CASES, EVIDENCE, RECORDED
from mxgate.auth.arc import ArcResult
from mxgate.auth.dmarc import DmarcResult
from mxgate.auth.pipeline import AuthAction, decide_auth_action, pct_sample, stamp_value


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_decide_auth_action(case):
    name, result, disposition, arc_status, sealers, trusted, (on_reject, on_quarantine), internal, expected = case
    dmarc = DmarcResult(result, "reject", None, 100, disposition, "fabrikam.test", None, reason="no aligned pass")
    recorded = RECORDED.get(name, EVIDENCE)
    aar = ((len(sealers), f"mx.{sealers[-1]}; {recorded}"),) if sealers and recorded else ()
    action = decide_auth_action(dmarc, ArcResult(arc_status, sealers, auth_results=aar), trusted_sealers=trusted,
                                reject_action=on_reject, quarantine_action=on_quarantine, internal=internal)
    assert isinstance(action, AuthAction)
    assert (action.action, action.reason) == expected


def test_the_trace_names_the_arc_set_and_the_result_used():
    dmarc = DmarcResult("fail", "reject", None, 100, "reject", "fabrikam.test", None)
    chain = ArcResult("pass", ("gw.test", "lists.test"), auth_results=(
        (1, "gw.test; dmarc=pass header.from=fabrikam.test"), (2, "mx.lists.test; dmarc=pass header.from=fabrikam.test")))
    action = decide_auth_action(dmarc, chain, trusted_sealers=["lists.test"],
                                reject_action="quarantine", quarantine_action="junk")
    assert action.detail == ("DMARC p=reject overridden: ARC set i=2 sealed by lists.test recorded "
                             "dmarc=pass header.from=fabrikam.test, aligned with fabrikam.test")


def test_an_unused_trusted_set_is_explained():
    dmarc = DmarcResult("fail", "reject", None, 100, "reject", "fabrikam.test", None, reason="no aligned pass")
    chain = ArcResult("pass", ("lists.test",), auth_results=((1, "mx.lists.test; dmarc=fail header.from=fabrikam.test"),))
    action = decide_auth_action(dmarc, chain, trusted_sealers=["lists.test"],
                                reject_action="quarantine", quarantine_action="junk")
    assert (action.action, action.reason) == ("quarantine", "dmarc-policy")
    assert action.detail.endswith("ARC set i=1 sealed by lists.test recorded dmarc=fail header.from=fabrikam.test: "
                                  "no evidence")


@pytest.mark.parametrize("helo, expected", [
    ("mail.fabrikam.test", "ip=[203.0.113.7];domain=mail.fabrikam.test"),
    ("evil;ip=[1.2.3.4]\r\nX-Injected: 1", "ip=[203.0.113.7];domain=evilip[1.2.3.4]X-Injected:1"),
    ("", "ip=[203.0.113.7];domain=unknown"),
    (None, "ip=[203.0.113.7];domain=unknown"),
    ("\x1b[31m", "ip=[203.0.113.7];domain=[31m"),
])
def test_stamp_keeps_the_peer_chosen_helo_inert(helo, expected):
    assert stamp_value("203.0.113.7", helo) == expected


def test_pct_sample_is_reproducible_and_in_range():
    assert pct_sample("00000000deadbeef") == 0.0
    assert pct_sample("ffffffff00000000") == pct_sample("ffffffff11111111")
    samples = {pct_sample(f"{i:08x}") for i in range(0, 2**32, 2**32 // 997)}
    assert all(0 <= s < 100 for s in samples) and len(samples) > 900
    assert pct_sample("not-hex") == 0.0


async def test_resolvers_of_several_nodes_stack_and_the_original_returns():
    """pyspf reads dnspython's process-wide default; nodes stopping in any order must not
    leave a stopped node's resolver (pointing at a dead server) behind."""
    import dns.resolver

    from mxgate.auth.pipeline import Authenticator

    original = dns.resolver.default_resolver
    a = Authenticator(servers=["127.0.0.1:1053"], timeout=0.5, non_routable=())
    b = Authenticator(servers=["127.0.0.1:2053"], timeout=0.5, non_routable=())
    a.install()
    b.install()
    assert dns.resolver.default_resolver is b.resolver
    await a.stop()
    assert dns.resolver.default_resolver is b.resolver
    await b.stop()
    assert dns.resolver.default_resolver is original
