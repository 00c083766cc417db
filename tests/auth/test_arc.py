"""ARC sealing by a gateway and validation with keys on the real DNS server."""
from __future__ import annotations

import pytest

from mxgate.auth.arc import ArcResult, ArcSealError, arc_overrides_dmarc, seal_arc, validate_arc

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
    assert arc_overrides_dmarc(result, ["lists.test"])
    assert not arc_overrides_dmarc(result, [GW])  # only the latest sealer counts


def test_dns_timeout_fails_the_chain(keys, dns_server, dnsfunc, make_message):
    sealed = seal(make_message(), keys[0])
    dns_server.set_delay(3)
    result = validate_arc(sealed, dnsfunc)
    assert result.status == "fail" and "temporary DNS" in result.reason


def test_overrides_only_for_trusted_passing_chains():
    passing = ArcResult("pass", (GW,))
    assert arc_overrides_dmarc(passing, ["GW.Contoso.Test."])
    assert not arc_overrides_dmarc(passing, ["other.test"])
    assert not arc_overrides_dmarc(ArcResult("fail", (GW,)), [GW])
    assert not arc_overrides_dmarc(ArcResult("none", ()), [GW])
    assert not arc_overrides_dmarc(ArcResult("pass", ()), [GW])


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
