"""Issue 19: on a partner connector, a trusted sealer's recorded aligned pass stands for the
mailbox's own SPF/DKIM/DMARC (the signatures are not verified twice). Attacker cases first:
each must fall back to the full verification. Which path was taken is visible: a carried result
is labelled "(from ARC set i=N sealed by ...)" in Authentication-Results and in the trace.

The sealer here is lists.test (its ARC key is in the zone); fabrikam publishes p=reject and an
SPF record that does not cover LIST_IP, and nothing is DKIM-signed, so the full verification
gives dmarc=fail, and only the existing ARC override (same evidence) keeps the mail."""

from __future__ import annotations

import asyncio

import pytest

import rig
from efkit import arc_sealed, body, deliver, dns_section, header_lines, policy, trace_row, via_gateway
from mxgate.auth.arc import seal_arc
from mxgate.auth.pipeline import Authenticator
from rig import maildir_messages

LIST_IP = "192.0.2.44"
PASS = "spf=pass smtp.mailfrom=fabrikam.test; dkim=none; dmarc=pass header.from=fabrikam.test; arc=none"
CARRIED = "(from ARC set i=1 sealed by lists.test)"
SENDER = "news@fabrikam.test"


def _node(node_factory, zone, trusted=("lists.test",)):
    return node_factory(policy(ef_skip_last_ip=True, org_arc_trusted_sealers=list(trusted)), dns=dns_section(zone))


def _ar(n) -> str:
    [stored] = maildir_messages(n.home, "alice@contoso.test")
    [ar] = header_lines(stored, "Authentication-Results")
    return ar


def _verified_here(n) -> dict:
    """The message went the full way: the trace has no carried results and DMARC failed here."""
    row = trace_row(n)
    assert "results_from" not in row["detail"]
    assert row["detail"]["dmarc"]["result"] == "fail"
    return row


# --- attacker cases: every one is verified in full -----------------------------------------
def test_forged_top_set_claiming_the_trusted_sealer_is_verified_in_full(node_factory, zone, keys):
    n = _node(node_factory, zone)
    forged = arc_sealed(body(), keys[2][0], PASS)  # d=lists.test, signed with a key it never published
    assert deliver(n, via_gateway(forged, ip=LIST_IP), sender=SENDER)["end"][0] == 250
    row = _verified_here(n)
    assert row["detail"]["arc"]["result"] == "fail"
    assert (row["status"], row["reason"]) == ("Quarantined", "dmarc-policy")


def test_tampered_message_under_a_genuine_set_is_verified_in_full(node_factory, zone, keys):
    n = _node(node_factory, zone)
    sealed = arc_sealed(body(), keys[1][0], PASS).replace(b"Hello Alice.", b"Pay the invoice.")
    assert deliver(n, via_gateway(sealed, ip=LIST_IP), sender=SENDER)["end"][0] == 250
    assert _verified_here(n)["status"] == "Quarantined"


def test_valid_set_from_an_untrusted_sealer_is_verified_in_full(node_factory, zone, keys):
    n = _node(node_factory, zone, trusted=("other-list.test",))
    assert deliver(n, via_gateway(arc_sealed(body(), keys[1][0], PASS), ip=LIST_IP), sender=SENDER)["end"][0] == 250
    row = _verified_here(n)
    assert row["detail"]["arc"]["result"] == "pass" and row["status"] == "Quarantined"


@pytest.mark.parametrize("recorded", [
    "spf=pass smtp.mailfrom=fabrikam.test; dkim=none; dmarc=fail header.from=fabrikam.test; arc=none",
    "spf=temperror smtp.mailfrom=fabrikam.test; dkim=none; dmarc=temperror header.from=fabrikam.test; arc=none",
    "spf=pass smtp.mailfrom=fabrikam.test; dkim=none; arc=none",  # no DMARC result at all
    "spf=pass smtp.mailfrom=fabrikam.test; dkim=none; dmarc=pass header.from=woodgrove.test; arc=none",
    "spf=pass smtp.mailfrom=other.test; dkim=none; dmarc=pass header.from=fabrikam.test; arc=none",
    "spf=fail smtp.mailfrom=fabrikam.test; dkim=none; dmarc=pass header.from=fabrikam.test; arc=none",
    "spf=pass smtp.mailfrom=fabrikam.test; dkim=none; dmarc=pass header.from=fabrikam.test;"
    " dmarc=fail header.from=fabrikam.test; arc=none",
])
def test_trusted_sealer_without_an_aligned_pass_for_this_message_is_verified_in_full(node_factory, zone, keys,
                                                                                      recorded):
    n = _node(node_factory, zone)
    assert deliver(n, via_gateway(arc_sealed(body(), keys[1][0], recorded), ip=LIST_IP),
                   sender=SENDER)["end"][0] == 250
    row = _verified_here(n)
    assert row["detail"]["arc"]["result"] == "pass"


def test_results_the_sender_wrote_below_the_sealers_set_are_not_taken(node_factory, zone, keys):
    n = _node(node_factory, zone)
    own = b"ARC-Authentication-Results: i=1; lists.test; " + PASS.encode() + b"\r\n"
    # The sender's own AAR reaches the sealer, which must then record arc=fail and seal cv=fail.
    sealed = arc_sealed(own + body(), keys[1][0], PASS.replace("arc=none", "arc=fail"))
    assert deliver(n, via_gateway(sealed, ip=LIST_IP), sender=SENDER)["end"][0] == 250
    assert _verified_here(n)["detail"]["arc"]["result"] == "fail"
    # Added below a genuine set after sealing: the set no longer validates.
    genuine = arc_sealed(body(), keys[1][0], PASS.replace("dmarc=pass", "dmarc=fail"))
    head, _, rest = genuine.partition(b"Authentication-Results: lists.test")
    n2 = _node(node_factory, zone)
    assert deliver(n2, via_gateway(head + own + b"Authentication-Results: lists.test" + rest, ip=LIST_IP),
                   sender=SENDER)["end"][0] == 250
    assert "results_from" not in trace_row(n2)["detail"]


def test_attacker_address_with_a_genuine_set_is_refused_before_data(node_factory, zone, keys):
    n = _node(node_factory, zone)
    result = rig.send_message("127.0.0.1", n.port(), source=rig.ATTACKER, sender=SENDER, rcpts=["alice@contoso.test"],
                              data=arc_sealed(body(), keys[1][0], PASS))
    assert result["rcpt"][0][0] == 550 and "end" not in result


def test_no_partner_connector_means_full_verification(zone, keys):
    """The hook itself: with no connector (or an on-premises one) the sealer is never asked."""
    auth = Authenticator(servers=[zone.address], timeout=0.5, non_routable=[])
    data = via_gateway(arc_sealed(body(), keys[1][0], PASS), ip=LIST_IP)

    class OnPremises:
        type, ef_users, ef_skip_last_ip, ef_skip_ips, ef_test_mode = "on_premises", (), True, (), False

    async def run(connector):
        return await auth.gather(data, trace_id="0" * 32, connecting_ip=rig.GATEWAY, helo="gw.contoso.test",
                                 sender=SENDER, connector=connector, recipients=["alice@contoso.test"],
                                 trusted_sealers=("lists.test",))

    auth.install()  # pyspf asks dnspython's default resolver: the zone's
    try:
        for connector in (None, OnPremises()):
            facts = asyncio.run(run(connector))
            assert facts.results_from == "" and facts.arc.status == "pass"
            assert facts.spf.result == "fail" and facts.dmarc.result == "fail"
    finally:
        asyncio.run(auth.stop())


# --- the trusted sealer's aligned pass, on the partner connector ---------------------------
def test_trusted_sealers_aligned_pass_is_taken_and_labelled(node_factory, zone, keys, monkeypatch):
    import mxgate.auth.pipeline as pipeline

    def never(*args, **kwargs):
        raise AssertionError("verified again")

    monkeypatch.setattr(pipeline, "check_spf", never)
    monkeypatch.setattr(pipeline, "verify_dkim", never)
    monkeypatch.setattr(pipeline, "evaluate_authors", never)
    n = _node(node_factory, zone)
    assert deliver(n, via_gateway(arc_sealed(body(), keys[1][0], PASS), ip=LIST_IP), sender=SENDER)["end"][0] == 250
    ar = _ar(n)
    assert f"spf=pass {CARRIED} smtp.mailfrom=fabrikam.test; dkim=none; dmarc=pass {CARRIED}" in ar
    assert "header.from=fabrikam.test" in ar and ar.endswith("arc=pass (sealed by lists.test)")
    row = trace_row(n)
    assert row["status"] == "Delivered"
    assert row["detail"]["results_from"] == ("SPF, DKIM and DMARC as recorded by the trusted sealer in ARC set i=1"
                                             " sealed by lists.test (not verified again here)")
    assert row["detail"]["dmarc"]["result"] == "pass" and "not verified again" in row["detail"]["dmarc"]["reason"]
    assert (row["detail"]["action"]["action"], row["detail"]["action"]["reason"]) == ("deliver", "dmarc-pass")
