"""ARC sealing by a gateway and validation with keys on the real DNS server."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxgate.auth.arc import ArcResult, ArcSealError, arc_override, seal_arc, validate_arc

GW = "gw.contoso.test"
GW_AR = f"{GW}; spf=pass smtp.mailfrom=fabrikam.test; dkim=none; arc=none"


@pytest.fixture
def keys(dns_server, dkim_keys):
    (gw_key, gw_txt), (list_key, list_txt) = dkim_keys
    dns_server.add(f"arc._domainkey.{GW}", "TXT", gw_txt)
    dns_server.add("arc._domainkey.lists.test", "TXT", list_txt)
    return gw_key, list_key


def seal(message: bytes, key: bytes, srv_id=GW, domain=GW, ar=GW_AR) -> bytes:
    arc_headers = seal_arc(message, srv_id, domain, "arc", key, ar)
    return arc_headers + f"Authentication-Results: {ar}\r\n".encode() + message


def test_gateway_seal_validates(keys, dnsfunc, make_message):
    sealed = seal(make_message(), keys[0])
    assert sealed.startswith(b"ARC-Seal: i=1; cv=none;")
    for name in (b"ARC-Message-Signature: i=1;", b"ARC-Authentication-Results: i=1; gw.contoso.test"):
        assert name in sealed
    result = validate_arc(sealed, dnsfunc)
    assert (result.status, result.sealers) == ("pass", (GW,))


def test_unsealed_message_is_none(dnsfunc, make_message):
    assert validate_arc(make_message(), dnsfunc) == ArcResult("none", (), "Message is not ARC signed")


def test_unsealed_message_skips_dkimpy_but_any_arc_field_does_not(keys, dnsfunc, make_message, monkeypatch):
    """The no-ARC shortcut is taken only when no "arc-" appears in the header section in any
    spelling; an ARC field our own parser might read differently still reaches dkimpy."""
    import dkim as dkimpy

    from mxgate.auth import dkim_fast

    calls = []

    def counting(real):
        def call(*args, **kwargs):
            calls.append(1)
            return real(*args, **kwargs)
        return call

    # The full validation is dkim_fast's one-set proof of a pass, else dkimpy's arc_verify.
    monkeypatch.setattr(dkimpy, "arc_verify", counting(dkimpy.arc_verify))
    monkeypatch.setattr(dkim_fast, "arc_chain_passes", counting(dkim_fast.arc_chain_passes))
    plain = make_message()
    assert validate_arc(plain + b"ARC-Seal: in the body\r\n", dnsfunc).status == "none" and calls == []
    sealed = seal(plain, keys[0])
    assert validate_arc(sealed, dnsfunc).status == "pass" and len(calls) == 1
    for variant in (sealed.replace(b"ARC-Seal:", b"arc-seal :"), sealed.replace(b"\r\n", b"\n")):
        before = len(calls)
        validate_arc(variant, dnsfunc)
        assert len(calls) > before
    # A set without its seal, or with a broken instance, is still judged as a broken chain.
    lone = b"ARC-Authentication-Results: i=1; gw.contoso.test; spf=pass\r\n" + plain
    assert validate_arc(lone, dnsfunc).status == "fail"
    folded = b"X-Note: see\r\n ARC-Seal: i=1; d=gw.contoso.test\r\n" + plain
    before = len(calls)
    validate_arc(folded, dnsfunc)
    assert len(calls) > before  # an "arc-" inside another field's fold also takes the full path


def test_tampered_body_fails(keys, dnsfunc, make_message):
    sealed = seal(make_message(), keys[0])
    result = validate_arc(sealed.replace(b"Hello.", b"Goodbye."), dnsfunc)
    assert (result.status, result.sealers) == ("fail", (GW,))


def test_forged_seal_with_wrong_key_fails(keys, dnsfunc, make_message):
    forged = seal(make_message(), keys[1])  # claims gw.contoso.test, signed with another key
    assert validate_arc(forged, dnsfunc).status == "fail"


def test_two_hop_chain_lists_sealers_in_instance_order(keys, dnsfunc, make_message):
    first = seal(make_message(), keys[0])
    ar2 = "mx.lists.test; arc=pass header.oldest-pass=0"
    second = seal(first, keys[1], srv_id="mx.lists.test", domain="lists.test", ar=ar2)
    result = validate_arc(second, dnsfunc)
    assert (result.status, result.sealers) == ("pass", (GW, "lists.test"))
    assert result.auth_results == ((1, GW_AR), (2, ar2))  # what each sealer recorded
    assert not arc_override(result, [GW], "fabrikam.test").applies  # only the latest sealer counts
    latest = arc_override(result, ["lists.test"], "fabrikam.test")
    assert not latest.applies and (latest.instance, latest.sealer) == (2, "lists.test")  # it recorded no pass


def test_dns_timeout_fails_the_chain(keys, dns_server, dnsfunc, make_message):
    sealed = seal(make_message(), keys[0])
    dns_server.set_delay(3)
    result = validate_arc(sealed, dnsfunc)
    assert result.status == "fail" and "temporary DNS" in result.reason


# (what the trusted sealer recorded in its ARC-Authentication-Results, applies?) for a DMARC
# failure of fabrikam.test (adversarial.md §9: an override needs evidence of an aligned pass).
EVIDENCE = [
    ("dmarc=pass header.from=fabrikam.test", True),
    ("dmarc=pass", True),
    ("spf=pass smtp.mailfrom=ceo@fabrikam.test", True),
    ("spf=pass smtp.mailfrom=bounce.fabrikam.test", True),  # relaxed alignment
    ("dkim=pass header.d=fabrikam.test header.s=sel", True),
    ("dkim=pass header.d=mail.fabrikam.test; spf=fail smtp.mailfrom=x.test", True),
    ("dmarc=fail header.from=fabrikam.test; spf=pass smtp.mailfrom=fabrikam.test", False),  # it saw a failure
    ("dmarc=temperror header.from=fabrikam.test; spf=pass smtp.mailfrom=fabrikam.test", False),  # timed out
    ("spf=temperror smtp.mailfrom=fabrikam.test; dkim=none", False),  # the sealer's checks timed out
    ("dmarc=pass header.from=other.test", False),  # a pass for another author
    ("spf=pass smtp.mailfrom=bulk-esp.test; dkim=pass header.d=bulk-esp.test", False),  # unaligned
    ("spf=fail smtp.mailfrom=fabrikam.test; dkim=fail header.d=fabrikam.test", False),
    ("spf=pass", False),  # no identity, nothing to align
    ("arc=none", False),
    ("dmarc=pass header.from=xn--bcher-kva.example", False),
]


@pytest.mark.parametrize("recorded,applies", EVIDENCE, ids=[e[0] for e in EVIDENCE])
def test_override_needs_an_aligned_pass_recorded_by_the_trusted_sealer(recorded, applies):
    chain = ArcResult("pass", ("lists.test",), auth_results=((1, f"mx.lists.test; {recorded}"),))
    override = arc_override(chain, ["Lists.Test."], "fabrikam.test")
    assert override.applies is applies
    assert (override.instance, override.sealer) == (1, "lists.test")
    assert "ARC set i=1 sealed by lists.test" in override.explanation
    if applies:
        assert override.evidence.split()[0] in recorded and "aligned with fabrikam.test" in override.explanation


def test_strict_alignment_of_the_failing_record_applies_to_the_evidence():
    chain = ArcResult("pass", ("lists.test",), auth_results=((1, "mx.lists.test; dkim=pass header.d=mail.fabrikam.test"),))
    assert arc_override(chain, ["lists.test"], "fabrikam.test", adkim="r").applies
    assert not arc_override(chain, ["lists.test"], "fabrikam.test", adkim="s").applies


def test_no_override_without_a_trusted_passing_chain():
    recorded = ((1, "gw; dmarc=pass header.from=fabrikam.test"),)
    assert arc_override(ArcResult("pass", (GW,), auth_results=recorded), ["GW.Contoso.Test."], "fabrikam.test").applies
    assert not arc_override(ArcResult("pass", (GW,), auth_results=recorded), ["other.test"], "fabrikam.test").applies
    assert not arc_override(ArcResult("fail", (GW,), auth_results=recorded), [GW], "fabrikam.test").applies
    assert not arc_override(ArcResult("none", ()), [GW], "fabrikam.test").applies
    assert not arc_override(ArcResult("pass", ()), [GW], "fabrikam.test").applies
    assert not arc_override(ArcResult("pass", (GW,)), [GW], "fabrikam.test").applies  # no AAR at all
    other_instance = ArcResult("pass", (GW, "lists.test"), auth_results=recorded)  # evidence only in i=1
    assert not arc_override(other_instance, ["lists.test"], "fabrikam.test").applies
    garbage = ArcResult("pass", (GW,), auth_results=((1, "gw; spf"),))
    assert "do not parse" in arc_override(garbage, [GW], "fabrikam.test").explanation


def test_the_gateways_own_results_after_a_timeout_vouch_for_nothing():
    """What server/gateway.py seals when its SPF and DMARC checks timed out."""
    from mxgate.auth.results import format_authentication_results
    from mxgate.auth.spf import SpfResult

    ar = format_authentication_results(GW, SpfResult("temperror", "timeout", "fabrikam.test"), "a@fabrikam.test",
                                       "h", None, (), None, ArcResult("none", ()), "fabrikam.test")
    chain = ArcResult("pass", (GW,), auth_results=((1, ar),))
    assert not arc_override(chain, [GW], "fabrikam.test").applies


def test_seal_refuses_what_dkimpy_would_silently_skip(keys, make_message):
    message = make_message()
    with pytest.raises(ArcSealError, match="authserv-id"):
        seal_arc(message, GW, GW, "arc", keys[0], "other.test; spf=pass smtp.mailfrom=a.test")
    forged = f"Authentication-Results: {GW}; spf=pass\r\n".encode() + message
    with pytest.raises(ArcSealError, match="sanitize"):
        seal_arc(forged, GW, GW, "arc", keys[0], GW_AR)
    with pytest.raises(ArcSealError, match="arc=pass or arc=fail"):
        seal_arc(seal(message, keys[0]), "mx.lists.test", "lists.test", "arc", keys[1], "mx.lists.test; arc=none")
    with pytest.raises(ArcSealError, match="arc=none"):
        seal_arc(message, GW, GW, "arc", keys[0], f"{GW}; arc=pass")
    with pytest.raises(ArcSealError, match="does not parse"):
        seal_arc(message, GW, GW, "arc", keys[0], f"{GW}; spf")


def test_bare_lf_message_is_sealed_in_its_own_line_ending(keys, dnsfunc, make_message):
    message = make_message().replace(b"\r\n", b"\n")
    arc_headers = seal_arc(message, GW, GW, "arc", keys[0], GW_AR)
    assert b"\r" not in arc_headers
    sealed = arc_headers + f"Authentication-Results: {GW_AR}\n".encode() + message
    assert validate_arc(sealed, dnsfunc).status == "pass"


def test_seal_parses_our_results_once_and_seals_the_same_bytes(keys, dnsfunc, make_message, monkeypatch):
    """dkimpy's arc_sign takes seal_arc's parse of our own Authentication-Results instead of
    parsing the same text again (issue 19); a field of another authserv-id is still parsed by
    authres, and the seal is byte for byte what dkimpy makes parsing everything itself."""
    import authres
    import dkim as dkimpy

    from mxgate.auth import arc as arc_module

    real_parse = authres.AuthenticationResultsHeader.parse
    parsed: list[str] = []

    def counting(text):
        parsed.append(text.split(":", 1)[1].split(";", 1)[0].strip())
        return real_parse(text)

    monkeypatch.setattr(authres.AuthenticationResultsHeader, "parse", staticmethod(counting))
    other = b"Authentication-Results: mx.fabrikam.test; spf=pass smtp.mailfrom=fabrikam.test\r\n"
    message = other + make_message()
    shared = seal_arc(message, GW, GW, "arc", keys[0], GW_AR, timestamp=1_700_000_000)
    assert sorted(parsed) == [GW, "mx.fabrikam.test"]  # ours once (seal_arc), the other one by dkimpy

    parsed.clear()
    monkeypatch.setattr(dkimpy, "authres", authres)  # dkimpy as shipped: parses every field itself
    alone = seal_arc(message, GW, GW, "arc", keys[0], GW_AR, timestamp=1_700_000_000)
    assert sorted(parsed) == [GW, GW, "mx.fabrikam.test"]
    assert shared == alone
    assert arc_module._handoff.parsed is None  # nothing left behind for the next seal in this thread
    sealed = shared + f"Authentication-Results: {GW_AR}\r\n".encode() + message
    assert validate_arc(sealed, dnsfunc).status == "pass"


# --- issue 19: a trusted sealer's recorded results standing for the mailbox's own ----------
_RECORDED = "lists.test; spf=pass smtp.mailfrom=fabrikam.test; dkim=pass header.d=fabrikam.test header.s=sel" \
            " header.b=abcdefghij; dmarc=pass header.from=fabrikam.test; arc=none"


def _chain(status="pass", recorded=_RECORDED, sealers=("lists.test",)):
    return ArcResult(status, sealers, "", ((len(sealers), recorded),) if recorded is not None else ())


def test_sealer_results_only_from_a_passing_chain_of_a_trusted_latest_sealer():
    from mxgate.auth.arc import trusted_sealer_results as taken

    good = taken(_chain(), ["Lists.Test."], ["fabrikam.test"], "fabrikam.test")
    assert good is not None and good.where == "ARC set i=1 sealed by lists.test"
    assert (good.spf.result, good.dmarc.result, good.dmarc.aligned_by) == ("pass", "pass", "dkim")
    assert [(d.result, d.domain, d.selector, d.header_b) for d in good.dkim] == [("pass", "fabrikam.test", "sel",
                                                                                   "abcdefgh")]
    assert "not verified again" in good.dmarc.reason and "not verified again" in good.spf.explanation
    assert taken(_chain("fail"), ["lists.test"], ["fabrikam.test"], "fabrikam.test") is None
    assert taken(_chain("none", sealers=()), ["lists.test"], ["fabrikam.test"], "fabrikam.test") is None
    assert taken(_chain(), [], ["fabrikam.test"], "fabrikam.test") is None
    # Only the latest set counts: a trusted sealer below an untrusted one vouches for nothing.
    assert taken(_chain(sealers=("lists.test", "other.test")), ["lists.test"], ["fabrikam.test"],
                 "fabrikam.test") is None
    assert taken(_chain(recorded=None), ["lists.test"], ["fabrikam.test"], "fabrikam.test") is None
    assert taken(_chain(recorded="lists.test; spf=pass (unclosed"), ["lists.test"], ["fabrikam.test"],
                 "fabrikam.test") is None
    # Two author domains, or a null sender (no MAIL FROM domain): verify here.
    assert taken(_chain(), ["lists.test"], ["fabrikam.test", "woodgrove.test"], "fabrikam.test") is None
    assert taken(_chain(), ["lists.test"], ["fabrikam.test"], "") is None
    # A DKIM result that is not one RFC 8601 defines for dkim is not carried.
    odd = _RECORDED.replace("dkim=pass", "dkim=maybe")
    assert taken(_chain(recorded=odd), ["lists.test"], ["fabrikam.test"], "fabrikam.test") is None


# The plain-form reader of recorded results (auth/arc.py _plain_results) against authres: where
# it reads a value at all, it reads what authres reads; everything else goes to authres.
_word = st.text(alphabet="abcDEF0189-", min_size=1, max_size=6)
_value = st.one_of(st.builds(lambda a, b: f"{a}.{b}", _word, _word), st.builds(lambda a: f'"{a}/x"', _word),
                   st.builds(lambda a, b: f"{a}@{b}.test", _word, _word), _word,
                   st.sampled_from(["a=b", "[::1]", "a,b", "x:y", "\u00e9.test", "@b.test", '"q"@b.test', "a/b", "''"]))
_prop_text = st.builds(lambda t, n, v: f"{t}.{n}={v}", st.sampled_from(["smtp", "header", "SMTP", "policy", "body",
                                                                        "other"]), _word, _value)
_extra = st.sampled_from(["", " (a comment)", " (p=none pct=100)", " action=none", " reason=\"why\"", " (nested (x))",
                          " x=1", ' "stray'])
_resinfo = st.builds(lambda m, r, e, props: f"{m}={r}{e} {' '.join(props)}".strip(),
                     st.sampled_from(["spf", "dkim", "dmarc", "arc", "SPF", "dkim/1", "auth"]),
                     st.sampled_from(["pass", "fail", "none", "TempError", "policy"]), _extra,
                     st.lists(_prop_text, max_size=3))
_aar = st.builds(lambda sid, parts: sid + "".join("; " + p for p in parts),
                 st.sampled_from(["gw.mxgate.test", "gw.test 1", "(c) gw.test"]), st.lists(_resinfo, max_size=4))


@settings(max_examples=1500, deadline=None)
@given(_aar)
def test_plain_recorded_results_read_as_authres_reads_them(text):
    import authres

    from mxgate.auth.arc import _plain_results

    fast = _plain_results(text)
    if fast is None:
        return
    parsed = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + text).results
    assert [(r.method, r.result, [(p.type, p.name, p.value) for p in r.properties]) for r in fast] == \
        [(r.method, r.result, [(p.type, p.name, p.value) for p in r.properties]) for r in parsed]


def test_the_gateways_own_recorded_results_take_the_plain_path():
    from mxgate.auth.arc import _plain_results

    text = ("gw.mxgate.test; spf=pass smtp.mailfrom=fabrikam.test smtp.helo=bench.fabrikam.test; dkim=pass"
            " header.d=fabrikam.test header.s=bench header.b=\"ng/6NrKE\"; dmarc=pass (p=none pct=100) action=none"
            " header.from=fabrikam.test; arc=none")
    assert [(r.method, r.result) for r in _plain_results(text)] == [("spf", "pass"), ("dkim", "pass"),
                                                                     ("dmarc", "pass"), ("arc", "none")]


# --- the gateway's own clauses copied into ARC-Authentication-Results (issue 19) ---------------

def _our_value(helo: str, mail_from: str, dkim_domain: str, dmarc_result: str):
    from mxgate.auth.dkim import DkimResult
    from mxgate.auth.dmarc import DmarcResult
    from mxgate.auth.results import authentication_results_clauses
    from mxgate.auth.spf import SpfResult

    dmarc = DmarcResult(dmarc_result, "reject", None, 100, "reject" if dmarc_result == "fail" else "none",
                        "fabrikam.test", "", "")
    return authentication_results_clauses(GW, SpfResult("fail", "", "fabrikam.test"), mail_from, helo, None,
                                          (DkimResult("fail", dkim_domain, "sel", "abcd1234"),), dmarc,
                                          ArcResult("none", ()), "fabrikam.test")


HOSTILE = [
    ("mail.fabrikam.test", "a@fabrikam.test", "fabrikam.test"),
    ('evil"; dmarc=pass header.from=fabrikam.test; x="', "a@fabrikam.test", "fabrikam.test"),
    ("h", 'x"; dmarc=pass (\\"@fabrikam.test', "fabrikam.test"),
    ("h", "a@fabrikam.test", "fabrikam.test; dmarc=pass header.from=fabrikam.test"),
    ("h\r\nARC-Authentication-Results: i=1; gw.contoso.test; dmarc=pass", "a@b.test", "b.test"),
    ("h (comment; dmarc=pass)", "a@b.test", "b.test ) ; spf=pass smtp.mailfrom=fabrikam.test"),
]


@pytest.mark.parametrize("helo,mail_from,dkim_domain", HOSTILE)
def test_sealed_clauses_vouch_for_exactly_the_results_stamped(keys, dnsfunc, make_message, helo, mail_from,
                                                              dkim_domain):
    """Attacker's test: the AAR copies our clauses as they are, and what a trusted receiver reads
    from it is what authres reads from our Authentication-Results: the same methods and results,
    never a pass smuggled in through a HELO, MAIL FROM or d= value, and so no DMARC override."""
    import authres

    clauses = _our_value(helo, mail_from, dkim_domain, "fail")
    value = "; ".join(clauses)
    message = make_message()
    sealed = seal_arc(message, GW, GW, "arc", keys[0], value, clauses=clauses)
    from mxgate.auth.headers import parse_fields

    assert [f.name for f in parse_fields(sealed)] == [b"arc-seal", b"arc-message-signature",
                                                      b"arc-authentication-results"]
    full = sealed + f"Authentication-Results: {value}\r\n".encode() + message
    result = validate_arc(full, dnsfunc)
    assert result.status == "pass" and result.auth_results == ((1, value),)
    read = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + result.auth_results[0][1])
    stamped = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + value)
    assert [(r.method, r.result) for r in read.results] == [(r.method, r.result) for r in stamped.results] == [
        ("spf", "fail"), ("dkim", "fail"), ("dmarc", "fail"), ("arc", "none")]
    assert not arc_override(result, [GW], "fabrikam.test").applies


def test_clauses_that_are_not_the_value_are_not_trusted(keys, dnsfunc, make_message):
    """Clauses that disagree with the stamped value (a caller's bug) never reach the AAR: the
    value is parsed as before and that is what gets sealed."""
    stamped = _our_value("h", "a@fabrikam.test", "fabrikam.test", "fail")
    claimed = _our_value("h", "a@fabrikam.test", "fabrikam.test", "pass")
    value = "; ".join(stamped)
    message = make_message()
    for clauses in (claimed, ("GW.contoso.test",) + stamped[1:], (f'"{GW}"',) + stamped[1:],
                    stamped[:1] + ("dmarc pass",) + stamped[2:]):
        sealed = seal_arc(message, GW, GW, "arc", keys[0], value, clauses=clauses, timestamp=1_700_000_000)
        assert sealed == seal_arc(message, GW, GW, "arc", keys[0], value, timestamp=1_700_000_000)
        full = sealed + f"Authentication-Results: {value}\r\n".encode() + message
        recorded = validate_arc(full, dnsfunc).auth_results[0][1]
        assert "dmarc=fail" in recorded and "dmarc=pass" not in recorded


def test_sealing_with_clauses_keeps_the_chain_rules(keys, make_message):
    """The arc= checks read the clauses as they read a parse: a chain needs arc=pass/fail."""
    from mxgate.auth.results import authentication_results_clauses
    from mxgate.auth.spf import SpfResult

    spf = SpfResult("pass", "", "fabrikam.test")
    passed = authentication_results_clauses(GW, spf, "a@fabrikam.test", "h", None, (), None, ArcResult("pass", ("x",)),
                                            None)
    with pytest.raises(ArcSealError, match="arc=none"):
        seal_arc(make_message(), GW, GW, "arc", keys[0], "; ".join(passed), clauses=passed)
    chained = seal(make_message(), keys[1])
    none = authentication_results_clauses("mx.lists.test", spf, "a@fabrikam.test", "h", None, (), None,
                                          ArcResult("none", ()), None)
    with pytest.raises(ArcSealError, match="arc=pass or arc=fail"):
        seal_arc(chained, "mx.lists.test", "lists.test", "arc", keys[0], "; ".join(none), clauses=none)


def test_a_set_whose_a_names_another_key_type_than_its_keys_fails(keys, dns_server, dnsfunc, make_message):
    """RFC 8617 §5.2 verifies the AMS and the ARC-Seal as DKIM signatures (RFC 6376 §6.1.2 step 8).
    dkimpy's ARC verifier takes only a=rsa-sha256, then verifies with whatever key type k= names:
    where PyNaCl is installed, an Ed25519-signed set saying a=rsa-sha256 over k=ed25519 keys
    passed. Alone, and as the latest or the first of two sets."""
    from key_algorithms import arc_sealed_ed25519, ed25519_key

    seed, record = ed25519_key()
    dns_server.add("arc._domainkey.ed.test", "TXT", record)
    ar1, ar2 = "ed.test; spf=pass smtp.mailfrom=fabrikam.test; arc=none", "mx.lists.test; arc=pass"
    def labelled(message, ar):
        return arc_sealed_ed25519(f"Authentication-Results: {ar}\r\n".encode() + message, seed, keys[0],
                                  srv_id=ar.split(";")[0].encode(), domain=b"ed.test")

    alone = labelled(make_message(), ar1)
    assert b"a=rsa-sha256" in alone.split(b"ARC-Authentication-Results")[0]
    on_top = labelled(seal(make_message(), keys[0]), "ed.test; arc=pass")
    below = seal(labelled(make_message(), ar1), keys[1], srv_id="mx.lists.test", domain="lists.test", ar=ar2)
    for message, sealers in ((alone, ("ed.test",)), (on_top, (GW, "ed.test")), (below, ("ed.test", "lists.test"))):
        result = validate_arc(message, dnsfunc)
        assert (result.status, result.sealers) == ("fail", sealers), result.reason
        assert "k=ed25519" in result.reason and "a=rsa-sha256" in result.reason
