"""DKIM signing and verification of every signature, with keys served by the real DNS server."""
from __future__ import annotations

import pytest

from mxgate.auth.dkim import DkimResult, generate_dkim_key, sign_dkim, verify_dkim


@pytest.fixture
def signer(dns_server, dkim_keys):
    (priv1, txt1), (priv2, txt2) = dkim_keys
    dns_server.add("sel1._domainkey.fabrikam.test", "TXT", txt1)
    dns_server.add("sel2._domainkey.esp.test", "TXT", txt2)

    def sign(message: bytes, domain="fabrikam.test", selector="sel1", key=priv1) -> bytes:
        return sign_dkim(message, domain, selector, key) + message
    return sign


def test_generated_key_forms(dkim_keys):
    priv, txt = dkim_keys[0]
    assert priv.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert txt.startswith("v=DKIM1; k=rsa; p=MII") and len(txt) > 255  # needs 255-octet split


def test_sign_and_verify_pass(signer, dnsfunc, make_message):
    signed = signer(make_message())
    assert signed.startswith(b"DKIM-Signature: ")
    (result,) = verify_dkim(signed, dnsfunc)
    assert (result.result, result.domain, result.selector) == ("pass", "fabrikam.test", "sel1")
    b_value = signed.split(b" b=", 1)[1]
    assert result.header_b == "".join(b_value.decode().split())[:8]
    assert len(result.header_b) == 8


def test_unsigned_message_has_no_results(dnsfunc, make_message):
    assert verify_dkim(make_message(), dnsfunc) == ()


def test_body_tamper_fails(signer, dnsfunc, make_message):
    signed = signer(make_message())
    tampered = signed.replace(b"Hello.", b"Hellp.")
    (result,) = verify_dkim(tampered, dnsfunc)
    assert result.result == "fail"
    assert "body hash" in result.reason


def test_header_tamper_fails(signer, dnsfunc, make_message):
    signed = signer(make_message())
    (result,) = verify_dkim(signed.replace(b"quarterly", b"Quarterly"), dnsfunc)
    assert result.result == "fail"


def test_every_signature_is_verified(signer, dkim_keys, dnsfunc, make_message):
    message = make_message()
    good = sign_dkim(message, "esp.test", "sel2", dkim_keys[1][0])
    bad = sign_dkim(message, "fabrikam.test", "sel1", dkim_keys[1][0])  # wrong key for sel1
    results = verify_dkim(bad + good + message, dnsfunc)
    assert [(r.result, r.domain) for r in results] == [("fail", "fabrikam.test"), ("pass", "esp.test")]
    results = verify_dkim(good + bad + message, dnsfunc)
    assert [(r.result, r.domain) for r in results] == [("pass", "esp.test"), ("fail", "fabrikam.test")]


def test_missing_and_revoked_keys_are_permerror(dns_server, dkim_keys, dnsfunc, make_message):
    message = make_message()
    signed = sign_dkim(message, "nokey.test", "s", dkim_keys[0][0]) + message
    assert verify_dkim(signed, dnsfunc)[0].result == "permerror"
    dns_server.add("s._domainkey.nokey.test", "TXT", "v=DKIM1; k=rsa; p=")  # revoked (RFC 6376 §3.6.1)
    assert verify_dkim(signed, dnsfunc)[0].result == "permerror"


def test_dns_timeout_is_temperror(signer, dns_server, dnsfunc, make_message):
    signed = signer(make_message())
    dns_server.set_delay(3)
    (result,) = verify_dkim(signed, dnsfunc)
    assert result == DkimResult("temperror", "fabrikam.test", "sel1", result.header_b, result.reason)


def test_bare_lf_message_verifies(signer, dnsfunc, make_message):
    signed = signer(make_message())
    assert verify_dkim(signed.replace(b"\r\n", b"\n"), dnsfunc)[0].result == "pass"


def test_malformed_signature_is_reported_not_raised(dnsfunc, make_message):
    message = b"DKIM-Signature: v=1; a=rsa-sha256; d=x.test\r\n" + make_message()
    (result,) = verify_dkim(message, dnsfunc)
    assert result.result in ("neutral", "permerror") and result.domain == "x.test"


def test_signature_count_is_bounded(signer, dnsfunc, make_message):
    message = make_message()
    many = b"".join(b"DKIM-Signature: v=1; d=x%d.test; s=s; b=AAAA\r\n" % i for i in range(40))
    results = verify_dkim(many + message, dnsfunc)
    assert len(results) == 10
    assert all(r.result != "pass" for r in results)


# --- the key record must suit a= (RFC 6376 §6.1.2 steps 6 and 8) -------------------------------
# dkimpy verifies with the key type k= names and hashes with a='s hash: a signature made with one
# algorithm and labelled with another passed there. tests/auth/key_algorithms.py signs them.

from key_algorithms import dkim_signed, ed25519_key  # noqa: E402


def _records(**by_name):
    def dnsfunc(name, timeout=5.0):
        text = (name.decode() if isinstance(name, bytes) else name).rstrip(".").lower()
        value = by_name.get(text.split("._domainkey.")[0])
        return value.encode() if value is not None else None
    return dnsfunc


def test_an_rsa_signature_labelled_ed25519_over_an_rsa_key_never_passes(dkim_keys, make_message):
    """The attacker's case: RSA math (which dkimpy runs because the key says k=rsa) over a field
    that says a=ed25519-sha256. RFC 6376 §6.1.2 step 8: the key is not suitable, PERMFAIL."""
    (key, txt), _ = dkim_keys
    signed = dkim_signed(make_message(), key, algorithm=b"rsa-sha256", label=b"ed25519-sha256")
    for record in (txt, txt.replace("k=rsa; ", "")):  # k= said, and k= left to its default (rsa)
        (result,) = verify_dkim(signed, _records(s1=record))
        assert (result.result, result.domain) == ("permerror", "fabrikam.test"), record[:20]
        assert "k=rsa" in result.reason and "a=ed25519-sha256" in result.reason
    # Changed after signing it fails as it would anyway: the key still cannot verify a= (step 8
    # comes before the body hash, §6.1.3), so it stays permerror, never pass.
    (tampered,) = verify_dkim(signed.replace(b"Hello.", b"Hellp."), _records(s1=txt))
    assert tampered.result == "permerror"


def test_an_ed25519_signature_labelled_rsa_over_an_ed25519_key_never_passes(make_message):
    """The reverse (RFC 8463 keys): where PyNaCl is installed dkimpy verifies an Ed25519 signature
    over a=rsa-sha256 with the k=ed25519 key, and passed it."""
    seed, record = ed25519_key()
    signed = dkim_signed(make_message(), seed, algorithm=b"ed25519-sha256", label=b"rsa-sha256")
    (result,) = verify_dkim(signed, _records(s1=record))
    assert result.result == "permerror" and "k=ed25519" in result.reason and "a=rsa-sha256" in result.reason
    honest = dkim_signed(make_message(), seed, algorithm=b"ed25519-sha256", label=b"ed25519-sha256")
    assert verify_dkim(honest, _records(s1=record))[0].result == "pass"  # a= and k= agree: it passes


@pytest.mark.parametrize("h_tag, expected", [
    ("sha1", "permerror"), ("sha256", "pass"), ("sha1:sha256", "pass"), ("sha512 : sha256", "pass"),
    ("sha512", "permerror")])
def test_a_key_record_whose_h_leaves_out_the_hash_cannot_verify(dkim_keys, make_message, h_tag, expected):
    """RFC 6376 §3.6.1 h= / §6.1.2 step 6: a key limited to other hashes is PERMFAIL
    (inappropriate hash algorithm); names it does not know are ignored."""
    (key, txt), _ = dkim_keys
    signed = sign_dkim(make_message(), "fabrikam.test", "s1", key) + make_message()
    (result,) = verify_dkim(signed, _records(s1=txt.replace("k=rsa; ", f"k=rsa; h={h_tag}; ")))
    assert result.result == expected, result.reason


@pytest.mark.parametrize("canon", [b"relaxed/simple", b"relaxed/relaxed", b"simple/simple"])
def test_a_body_length_leaving_text_unsigned_is_policy_never_pass(signer, dkim_keys, dnsfunc, make_message, canon):
    """RFC 6376 §8.2: with l= a holder of one signed message appends what he likes; RFC 8601
    §2.7.1 `policy` (signed, not acceptable here). Whitespace the canonicalisation removes
    (trailing empty lines, and with relaxed trailing spaces) is no unsigned text."""
    import dkim as dkimpy

    message = make_message()
    signed = dkimpy.sign(message, b"sel1", b"fabrikam.test", dkim_keys[0][0], length=True, canonicalize=tuple(
        canon.split(b"/"))) + message
    assert [r.result for r in verify_dkim(signed, dnsfunc)] == ["pass"]
    assert [r.result for r in verify_dkim(signed + b"\r\n\r\n", dnsfunc)] == ["pass"]
    (appended,) = verify_dkim(signed + b"Wire the money to XX00.\r\n", dnsfunc)
    assert (appended.result, appended.domain) == ("policy", "fabrikam.test")
    assert appended.reason.startswith("l=")
    part = b"--B\r\nContent-Type: text/html\r\n\r\n<b>new bank details</b>\r\n--B--\r\n"
    assert [r.result for r in verify_dkim(signed + part, dnsfunc)] == ["policy"]
