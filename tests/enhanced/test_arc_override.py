"""Issue 4 must-show 4: a valid ARC chain from a sealer in `arc_trusted_sealers` overrides a
DMARC failure (reason recorded); the same chain from an untrusted sealer does not; a broken
chain is arc=fail. The list at lists.test relays fabrikam mail from 192.0.2.44, an address
fabrikam's SPF does not authorise, and nothing is DKIM-signed: DMARC p=reject fails."""

from __future__ import annotations

import pytest

from efkit import LIST_RESULTS, arc_sealed, body, deliver, dns_section, header_lines, policy, trace_row, via_gateway
from mxgate.quarantine.store import QuarantineStore
from rig import maildir_messages

LIST_IP = "192.0.2.44"


def _from_list(keys, tamper: bool = False, results: str = LIST_RESULTS) -> bytes:
    sealed = arc_sealed(body(), keys[1][0], results)
    if tamper:  # changed after sealing: the ARC-Message-Signature no longer verifies
        sealed = sealed.replace(b"Hello Alice.", b"Send the money.")
    return via_gateway(sealed, ip=LIST_IP, helo="mx.lists.test")


def test_trusted_sealer_overrides_dmarc_failure(node_factory, zone, keys):
    n = node_factory(policy(ef_skip_last_ip=True, org_arc_trusted_sealers=["lists.test"]), dns=dns_section(zone))
    assert deliver(n, _from_list(keys), sender="owner@lists.test")["end"][0] == 250
    [stored] = maildir_messages(n.home, "alice@contoso.test")  # inbox, not quarantine
    [ar] = header_lines(stored, "Authentication-Results")
    assert "dmarc=fail (p=reject pct=100) action=reject" in ar and ar.endswith("arc=pass (sealed by lists.test)")
    assert header_lines(stored, "Authentication-Results-Original")[0].startswith("lists.test; spf=pass")
    row = trace_row(n)
    assert row["status"] == "Delivered" and row["original_ip"] == LIST_IP
    action = row["detail"]["action"]
    assert (action["action"], action["reason"]) == ("deliver", "arc-trusted-sealer")
    assert action["detail"] == ("DMARC p=reject overridden: ARC set i=1 sealed by lists.test recorded "
                                "spf=pass smtp.mailfrom=fabrikam.test, aligned with fabrikam.test")
    assert row["detail"]["arc"] == {"result": "pass", "sealers": ["lists.test"], "reason": row["detail"]["arc"]["reason"]}


def test_same_chain_from_untrusted_sealer_is_quarantined(node_factory, zone, keys):
    n = node_factory(policy(ef_skip_last_ip=True, org_arc_trusted_sealers=["other-list.test"]), dns=dns_section(zone))
    assert deliver(n, _from_list(keys), sender="owner@lists.test")["end"][0] == 250
    assert maildir_messages(n.home, "alice@contoso.test") == []
    row = trace_row(n)
    assert (row["status"], row["reason"]) == ("Quarantined", "dmarc-policy")
    assert row["detail"]["arc"]["result"] == "pass"  # valid, just not vouched for by anyone we trust
    [item] = QuarantineStore(n.node.engine).list()
    assert (item["reason"], item["recipients"], item["trace_id"]) == ("dmarc-policy", ["alice@contoso.test"], row["trace_id"])


def test_broken_chain_is_arc_fail_and_never_overrides(node_factory, zone, keys):
    n = node_factory(policy(ef_skip_last_ip=True, org_arc_trusted_sealers=["lists.test"]), dns=dns_section(zone))
    assert deliver(n, _from_list(keys, tamper=True), sender="owner@lists.test")["end"][0] == 250
    assert maildir_messages(n.home, "alice@contoso.test") == []
    [stored] = [QuarantineStore(n.node.engine).get(i["id"])["body"] for i in QuarantineStore(n.node.engine).list()]
    assert header_lines(stored, "Authentication-Results")[0].endswith("arc=fail")
    row = trace_row(n)
    assert row["detail"]["arc"]["result"] == "fail" and row["detail"]["action"]["reason"] == "dmarc-policy"


# Issue 14: the same trusted sealer, a valid chain, but its own results show no aligned pass.
NO_EVIDENCE = {
    "recorded-dmarc-fail": "spf=pass smtp.mailfrom=lists.test; dkim=none; dmarc=fail header.from=fabrikam.test; arc=none",
    "checks-timed-out": "spf=temperror smtp.mailfrom=fabrikam.test; dkim=none; dmarc=temperror header.from=fabrikam.test;"
                        " arc=none",
    "unaligned-pass": "spf=pass smtp.mailfrom=lists.test; dkim=none; arc=none",
}


@pytest.mark.parametrize("name", list(NO_EVIDENCE))
def test_a_trusted_chain_without_an_aligned_pass_overrides_nothing(node_factory, zone, keys, name):
    n = node_factory(policy(ef_skip_last_ip=True, org_arc_trusted_sealers=["lists.test"]), dns=dns_section(zone))
    assert deliver(n, _from_list(keys, results=NO_EVIDENCE[name]), sender="owner@lists.test")["end"][0] == 250
    assert maildir_messages(n.home, "alice@contoso.test") == []
    row = trace_row(n)
    assert (row["status"], row["reason"]) == ("Quarantined", "dmarc-policy")
    assert row["detail"]["arc"]["result"] == "pass"  # the chain itself is valid and trusted
    assert "ARC set i=1 sealed by lists.test" in row["detail"]["action"]["detail"]
