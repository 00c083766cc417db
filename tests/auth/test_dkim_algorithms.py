"""Which DKIM/ARC signing algorithms mxgate accepts, from the sender's side: a sender picks a=,
makes the signature, and writes the key record of the domains he owns.

- ed25519-sha256 (RFC 8463 §3: verifiers MUST implement it) verifies on a default install,
  without PyNaCl (auth/ed25519.py gives dkimpy OpenSSL's Ed25519): the RFC's own dual-signed
  example passes twice, a change to what it signs fails, a key of the other type is permerror.
- rsa-sha1 (RFC 8301 §3.1: MUST NOT be used for verifying) is never a pass: permerror with a
  reason the Authentication-Results shows, so it never makes DMARC pass; ARC sets with it fail.
- ARC with ed25519-sha256: not accepted (the chain fails; auth/arc.py's docstring says why).

Signatures here are made by this file (hashlib + cryptography over dkimpy's canonicalisation and
header selection), not by dkimpy's signer, so the verifier is not checked against itself."""
from __future__ import annotations

import base64
import hashlib
import re
import time

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, utils

from mxgate.auth import dkim_canon, dkim_fast
from mxgate.auth.arc import seal_arc, validate_arc
from mxgate.auth.dkim import RSA_SHA1_REFUSED, DkimResult, verify_dkim
from mxgate.auth.dmarc import decide_dmarc, parse_dmarc_record
from mxgate.auth.results import format_authentication_results
from mxgate.auth.spf import SpfResult
from mxgate.filters import dkim as dkim_check
from mxgate.policy.gateway_checks import CheckSettings
from test_auth_differential import RFC8463_MESSAGE, RFC8463_RECORDS

NOW = int(time.time())
PLAIN = (b"From: Alice <alice@fabrikam.test>\r\nTo: bob@contoso.test\r\nSubject: quarterly\r\n"
         b" numbers\r\nDate: Mon, 02 Jun 2025 10:00:00 +0000\r\nMessage-ID: <m3@fabrikam.test>\r\n\r\n"
         b"Hello  there,\r\nthe numbers are in.\r\n")
TAGS = ((b"v", b"1"), (b"c", b"relaxed/relaxed"), (b"d", b"fabrikam.test"), (b"s", b"s1"),
        (b"t", str(NOW - 60).encode()), (b"h", b"from:to:subject:date:message-id"))


def _sign(message: bytes, key, algorithm: bytes, tags=TAGS, *, name=b"DKIM-Signature", include=None,
          with_bh=True, canon=None) -> bytes:
    """`message` under a `name` field with a=`algorithm` and `tags`, signed with `key` (an RSA or
    Ed25519 private key object) over what RFC 6376 §3.7 hashes: for Ed25519 the SHA-256 of it,
    signed with PureEdDSA (RFC 8463 §3); for RSA, PKCS#1 v1.5 over sha1/sha256 as a= says."""
    hasher = hashlib.sha1 if algorithm.endswith(b"sha1") else hashlib.sha256
    tag_map = dict(tags)
    policy = dkimpy.CanonicalizationPolicy.from_c_value(canon or tag_map.get(b"c", b"simple/simple"))
    headers, body = dkim_canon.ORIGINAL_PARSE(message)
    bh = base64.b64encode(hasher(policy.canonicalize_body(body)).digest())
    fields = ((b"a", algorithm),) + tuple(tags)
    value = b" " + b"; ".join(k + b"=" + v for k, v in fields) + (b"; bh=" + bh if with_bh else b"") + b"; b="
    if include is None:
        include = [x.lower() for x in re.split(rb"\s*:\s*", tag_map[b"h"])] + [b"from"]  # dkimpy's extra From
    h = hasher()
    dkimpy.hash_headers(h, policy, policy.canonicalize_headers(headers), include, (name, value), tag_map)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(h.digest())
    else:
        algo = hashes.SHA1() if hasher is hashlib.sha1 else hashes.SHA256()
        signature = key.sign(h.digest(), padding.PKCS1v15(), utils.Prehashed(algo))
    return name + b":" + value + base64.b64encode(signature) + b"\r\n" + message


def _dns(records: dict, asked: list | None = None):
    def dnsfunc(name, timeout=5.0):
        text = (name.decode() if isinstance(name, bytes) else name).rstrip(".").lower()
        if asked is not None:
            asked.append(text)
        value = records.get(text)
        return value.encode() if value is not None else None
    return dnsfunc


def _ed25519_key():
    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key, "v=DKIM1; k=ed25519; p=" + base64.b64encode(public).decode()


@pytest.fixture(scope="module")
def rsa_key(dkim_keys):
    (pem, txt), _ = dkim_keys
    return serialization.load_pem_private_key(pem, None), pem, txt


# --- ed25519-sha256 (RFC 8463) ----------------------------------------------------------------

def _rfc8463_dns(name, timeout=5.0):
    value = RFC8463_RECORDS.get((name.decode() if isinstance(name, bytes) else name).rstrip(".").lower())
    return value.encode() if value else None


def test_rfc8463_dual_signed_example_passes_both_signatures():
    """RFC 8463 Appendix A: the Ed25519 and the RSA-SHA256 signature over the same message."""
    results = verify_dkim(RFC8463_MESSAGE, _rfc8463_dns)
    assert [(r.result, r.selector) for r in results] == [("pass", "brisbane"), ("pass", "test")], results
    assert results[0].domain == "football.example.com"


@pytest.mark.parametrize("change, may_pass", [
    (lambda m: m.replace(b"We lost the game.", b"We won the game."), False),  # body
    (lambda m: m.replace(b"Subject: Is dinner ready?", b"Subject: Refund of $500"), False),  # signed header
    (lambda m: m.replace(b"From: Joe", b"From: Bank <alerts@bank.test>\r\nFrom: Joe"), False),  # extra From
    (lambda m: m.replace(b"To: Suzie Q", b"To: Eve"), False),
    (lambda m: m.replace(b"b=/gCrinpcQ", b"b=/gCrinpcR"), False),  # the signature itself
    (lambda m: m.replace(b"d=football.example.com; i=", b"d=Football.example.com; i=", 1), False),  # signed tags
    (lambda m: m.replace(b"Subject: Is dinner ready?", b"Subject:   Is dinner   ready?  "), True),  # relaxed
    (lambda m: m.replace(b"\r\n", b"\n"), True),
])
def test_rfc8463_ed25519_signature_over_a_changed_message(change, may_pass):
    (ed, _rsa) = verify_dkim(change(RFC8463_MESSAGE), _rfc8463_dns)
    assert ed.selector == "brisbane"
    assert (ed.result == "pass") == may_pass, ed
    if not may_pass:
        assert ed.result in ("fail", "permerror", "neutral")


def test_a_fresh_ed25519_signature_passes_and_aligns_for_dmarc(rsa_key):
    key, record = _ed25519_key()
    signed = _sign(PLAIN, key, b"ed25519-sha256")
    (result,) = verify_dkim(signed, _dns({"s1._domainkey.fabrikam.test": record}))
    assert (result.result, result.domain, result.selector) == ("pass", "fabrikam.test", "s1"), result
    dmarc = decide_dmarc("fabrikam.test", parse_dmarc_record("v=DMARC1; p=reject"), "fabrikam.test",
                         SpfResult("fail", "", "evil.test"), "evil.test", (result,))
    assert (dmarc.result, dmarc.aligned_by) == ("pass", "dkim")
    # An Ed25519 signature over a body changed afterwards fails (bh=), over a header: fails.
    for changed in (signed.replace(b"numbers are in.", b"numbers are out."),
                    signed.replace(b"Subject: quarterly", b"Subject: urgent")):
        (bad,) = verify_dkim(changed, _dns({"s1._domainkey.fabrikam.test": record}))
        assert bad.result == "fail", bad


@pytest.mark.parametrize("record_of", [
    lambda rsa_txt, ed_txt: rsa_txt,  # k=rsa
    lambda rsa_txt, ed_txt: rsa_txt.replace("k=rsa; ", ""),  # k= defaults to rsa
    lambda rsa_txt, ed_txt: ed_txt.replace("k=ed25519; ", "k=ed25519; h=sha1; "),  # h= without sha256
])
def test_an_ed25519_signature_over_an_unsuitable_key_is_permerror(rsa_key, record_of):
    """RFC 6376 §6.1.2 steps 6 and 8 (dkim.unsuitable_key): kept for the new algorithm."""
    key, ed_txt = _ed25519_key()
    signed = _sign(PLAIN, key, b"ed25519-sha256")
    (result,) = verify_dkim(signed, _dns({"s1._domainkey.fabrikam.test": record_of(rsa_key[2], ed_txt)}))
    assert result.result == "permerror" and "6.1.2" in result.reason, result


def test_an_rsa_signature_over_an_ed25519_key_is_permerror(rsa_key):
    _key, ed_txt = _ed25519_key()
    signed = _sign(PLAIN, rsa_key[0], b"rsa-sha256")
    (result,) = verify_dkim(signed, _dns({"s1._domainkey.fabrikam.test": ed_txt}))
    assert result.result == "permerror" and "k=ed25519" in result.reason, result


@pytest.mark.parametrize("p, expected", [
    ("", "permerror"),  # revoked
    ("AAAA", "permerror"),  # 3 bytes, not a 32-byte key
    ("!!!notbase64", "permerror"),
    ("11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo", "permerror"),  # missing padding
    (base64.b64encode(bytes(64)).decode(), "permerror"),  # 64 bytes
])
def test_a_broken_ed25519_key_record_is_permerror_never_an_exception(p, expected):
    key, _ = _ed25519_key()
    signed = _sign(PLAIN, key, b"ed25519-sha256")
    (result,) = verify_dkim(signed, _dns({"s1._domainkey.fabrikam.test": f"v=DKIM1; k=ed25519; p={p}"}))
    assert result.result == expected, result


@pytest.mark.parametrize("b", ["", "AAAA", base64.b64encode(bytes(63)).decode(), base64.b64encode(bytes(65)).decode(),
                               base64.b64encode(bytes(64)).decode()])
def test_an_ed25519_signature_of_the_wrong_size_fails_never_an_exception(b):
    key, record = _ed25519_key()
    signed = re.sub(rb"; b=[A-Za-z0-9+/=]+\r\n", b"; b=" + b.encode() + b"\r\n", _sign(PLAIN, key, b"ed25519-sha256"), count=1)
    (result,) = verify_dkim(signed, _dns({"s1._domainkey.fabrikam.test": record}))
    assert result.result in ("fail", "neutral", "permerror"), result


def test_ed25519_authentication_results_say_pass():
    results = verify_dkim(RFC8463_MESSAGE, _rfc8463_dns)
    text = format_authentication_results("mx.contoso.test", SpfResult("none", "", ""), "", "mx.test", None,
                                         results, None, None, None)
    assert "dkim=pass header.d=football.example.com header.s=brisbane" in text, text


# --- rsa-sha1 (RFC 8301 §3.1) -----------------------------------------------------------------

def test_a_valid_rsa_sha1_signature_is_permerror_without_a_key_lookup(rsa_key):
    key, pem, txt = rsa_key
    asked: list = []
    signed = _sign(PLAIN, key, b"rsa-sha1")
    dnsfunc = _dns({"s1._domainkey.fabrikam.test": txt}, asked)
    (result,) = verify_dkim(signed, dnsfunc)
    assert (result.result, result.reason, result.domain) == ("permerror", RSA_SHA1_REFUSED, "fabrikam.test")
    assert asked == []  # refused before any DNS question or RSA work
    assert dkim_fast.dkim_passes(signed, 0, dkim_fast.Lookups(dnsfunc), 5) is None
    # dkimpy's own signer's rsa-sha1 too, and the same signature under a sha256 one: the sha256 passes.
    by_dkimpy = dkimpy.sign(PLAIN, b"s1", b"fabrikam.test", pem, signature_algorithm=b"rsa-sha1")
    both = dkimpy.sign(by_dkimpy + PLAIN, b"s1", b"fabrikam.test", pem) + by_dkimpy + PLAIN
    assert [r.result for r in verify_dkim(both, dnsfunc)] == ["pass", "permerror"]


@pytest.mark.parametrize("a", [b"rsa-sha1", b"RSA-SHA1", b"Rsa-Sha1"])
def test_rsa_sha1_in_any_case_is_never_a_pass(rsa_key, a):
    key, _, txt = rsa_key
    signed = _sign(PLAIN, key, b"rsa-sha1").replace(b"a=rsa-sha1", b"a=" + a, 1)
    (result,) = verify_dkim(signed, _dns({"s1._domainkey.fabrikam.test": txt}))
    assert result.result == "permerror" and result.reason == RSA_SHA1_REFUSED, result


def test_rsa_sha1_as_the_only_aligned_dkim_never_makes_dmarc_pass(rsa_key):
    key, _, txt = rsa_key
    signed = _sign(PLAIN, key, b"rsa-sha1")
    dkim = verify_dkim(signed, _dns({"s1._domainkey.fabrikam.test": txt}))
    dmarc = decide_dmarc("fabrikam.test", parse_dmarc_record("v=DMARC1; p=reject"), "fabrikam.test",
                         SpfResult("fail", "", "evil.test"), "evil.test", dkim)
    assert (dmarc.result, dmarc.disposition) == ("fail", "reject")
    # The gateway's DKIM check fires on it (a permerror and no pass), like any unusable signature.
    fired = dkim_check.decide(dkim, CheckSettings("dkim", {"action": "tag"}))
    assert fired.fired and fired.reason == "dkim-fail", fired


def test_authentication_results_give_the_rsa_sha1_reason(rsa_key):
    key, _, txt = rsa_key
    dkim = verify_dkim(_sign(PLAIN, key, b"rsa-sha1"), _dns({"s1._domainkey.fabrikam.test": txt}))
    text = format_authentication_results("mx.contoso.test", SpfResult("none", "", ""), "", "mx.test", None,
                                         dkim, None, None, None)
    assert "dkim=permerror (rsa-sha1 not accepted: RFC 8301) header.d=fabrikam.test" in text, text
    # Other reasons stay in the trace only (they may carry dkimpy's text).
    other = DkimResult("permerror", "fabrikam.test", "s1", "abcdefgh", "key record: whatever dkimpy said")
    text = format_authentication_results("mx.contoso.test", SpfResult("none", "", ""), "", "mx.test", None,
                                         (other,), None, None, None)
    assert "whatever" not in text


# --- ARC: rsa-sha1 and ed25519-sha256 sets fail -----------------------------------------------

AR = "gw.test; dkim=pass header.d=fabrikam.test; arc=none"


def _arc_set(message: bytes, key, ams_a: bytes, as_a: bytes) -> bytes:
    """One ARC set (i=1, cv=none) over `message`, its AMS signed with a=`ams_a` and its seal with
    a=`as_a`, each a valid signature of that algorithm with `key` (RFC 8617 §5.1.1)."""
    with_aar = b"ARC-Authentication-Results: i=1; " + AR.encode() + b"\r\n" + message
    with_ams = _sign(with_aar, key, ams_a, ((b"i", b"1"), (b"c", b"relaxed/relaxed"), (b"d", b"gw.test"),
                                           (b"s", b"arc"), (b"t", str(NOW - 30).encode()),
                                           (b"h", b"from:to:subject:date:message-id")),
                     name=b"ARC-Message-Signature")
    return _sign(with_ams, key, as_a, ((b"i", b"1"), (b"cv", b"none"), (b"d", b"gw.test"), (b"s", b"arc"),
                                      (b"t", str(NOW - 30).encode())),
                 name=b"ARC-Seal", include=[b"arc-authentication-results", b"arc-message-signature"],
                 with_bh=False, canon=b"relaxed/relaxed")  # the seal: relaxed, no c= tag


def _arc_sets(rsa_key):
    key, pem, txt = rsa_key
    ed_key, ed_txt = _ed25519_key()
    rsa_dns = _dns({"arc._domainkey.gw.test": txt})
    ed_dns = _dns({"arc._domainkey.gw.test": ed_txt})
    return key, ed_key, rsa_dns, ed_dns


def test_arc_sets_the_helper_makes_validate_with_rsa_sha256(rsa_key):
    key, _, rsa_dns, _ = _arc_sets(rsa_key)
    sealed = _arc_set(PLAIN, key, b"rsa-sha256", b"rsa-sha256")
    assert validate_arc(sealed, rsa_dns).status == "pass"  # so the failures below are the algorithm's


@pytest.mark.parametrize("ams_a, as_a", [(b"rsa-sha1", b"rsa-sha256"), (b"rsa-sha256", b"rsa-sha1"),
                                         (b"rsa-sha1", b"rsa-sha1")])
def test_arc_sets_with_rsa_sha1_fail(rsa_key, ams_a, as_a):
    key, _, rsa_dns, _ = _arc_sets(rsa_key)
    result = validate_arc(_arc_set(PLAIN, key, ams_a, as_a), rsa_dns)
    assert result.status == "fail" and "rsa-sha1" in result.reason, result


@pytest.mark.parametrize("ams_a, as_a", [(b"ed25519-sha256", b"ed25519-sha256")])
def test_arc_sets_with_ed25519_fail(rsa_key, ams_a, as_a):
    """The decision (auth/arc.py docstring): ARC validates rsa-sha256 sets only, so a chain
    sealed with Ed25519 is `fail` and overrides nothing (the safe side: DMARC stands)."""
    _, ed_key, _, ed_dns = _arc_sets(rsa_key)
    result = validate_arc(_arc_set(PLAIN, ed_key, ams_a, as_a), ed_dns)
    assert result.status == "fail" and "ed25519-sha256" in result.reason, result


def test_our_own_seal_still_validates(rsa_key):
    _, pem, txt = rsa_key
    sealed = seal_arc(PLAIN, "gw.test", "gw.test", "arc", pem, AR) + \
        b"Authentication-Results: " + AR.encode() + b"\r\n" + PLAIN
    assert validate_arc(sealed, _dns({"arc._domainkey.gw.test": txt})).status == "pass"


def test_the_rsa_sha1_comment_survives_the_gateways_seal_and_the_mailboxs_reading(rsa_key):
    """The gateway seals its Authentication-Results clauses as they are (ARC-Authentication-
    Results); the comment must neither break the seal nor the mailbox's reading of the results."""
    from mxgate.auth.arc import recorded_results
    from mxgate.auth.results import authentication_results_clauses

    key, pem, txt = rsa_key
    dkim = verify_dkim(_sign(PLAIN, key, b"rsa-sha1"), _dns({"s1._domainkey.fabrikam.test": txt}))
    clauses = authentication_results_clauses("gw.test", SpfResult("none", "", ""), "", "mx.test", None, dkim,
                                              None, None, None)
    value = "; ".join(clauses)
    sealed = seal_arc(PLAIN, "gw.test", "gw.test", "arc", pem, value, clauses=clauses) + \
        b"Authentication-Results: " + value.encode() + b"\r\n" + PLAIN
    arc = validate_arc(sealed, _dns({"arc._domainkey.gw.test": txt}))
    assert arc.status == "pass", arc
    recorded = recorded_results(arc.auth_results[-1][1])
    assert [(r.method, r.result) for r in recorded] == [("spf", "none"), ("dkim", "permerror")]
