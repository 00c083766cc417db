"""SPF against the real loopback DNS server: each RFC 7208 result, HELO identity, timeouts."""
from __future__ import annotations

import time

import pytest

from mxgate.auth.spf import SpfResult, check_spf, spf_identity


@pytest.fixture
def zone(dns_server, resolver):
    dns_server.add("fabrikam.test", "TXT", "v=spf1 ip4:203.0.113.0/24 ip6:2001:db8::/32 -all")
    dns_server.add("soft.test", "TXT", "v=spf1 ip4:203.0.113.7 ~all")
    dns_server.add("neutral.test", "TXT", "v=spf1 ?all")
    dns_server.add("broken.test", "TXT", "v=spf1 ip4:203.0.113.7 bogus:x -all")
    dns_server.add("nospf.test", "TXT", "google-site-verification=abc")
    dns_server.add("mail.fabrikam.test", "TXT", "v=spf1 a -all")
    dns_server.add("mail.fabrikam.test", "A", "198.51.100.25")
    dns_server.add("inc.test", "TXT", "v=spf1 include:fabrikam.test -all")
    return dns_server


@pytest.mark.parametrize("ip,sender,expected", [
    ("203.0.113.7", "alice@fabrikam.test", "pass"),
    ("2001:db8::25", "alice@fabrikam.test", "pass"),
    ("198.51.100.9", "alice@fabrikam.test", "fail"),
    ("198.51.100.9", "bob@soft.test", "softfail"),
    ("198.51.100.9", "bob@neutral.test", "neutral"),
    ("198.51.100.9", "bob@nospf.test", "none"),
    ("198.51.100.9", "bob@nowhere.test", "none"),
    ("203.0.113.7", "bob@broken.test", "permerror"),
    ("203.0.113.99", "<bob@inc.test>", "pass"),
])
def test_results(zone, ip, sender, expected):
    result = check_spf(ip, sender, "helo.example.test", timeout=2)
    assert result.result == expected
    assert result.domain == sender.strip("<>").split("@")[1]
    assert result.identity == "mailfrom"


def test_null_sender_checks_helo_identity(zone):
    ok = check_spf("198.51.100.25", "<>", "mail.fabrikam.test", timeout=2)
    assert ok == SpfResult("pass", ok.explanation, "mail.fabrikam.test", "helo")
    bad = check_spf("198.51.100.26", "", "mail.fabrikam.test", timeout=2)
    assert (bad.result, bad.identity) == ("fail", "helo")


def test_null_sender_without_helo_is_none(zone):
    assert check_spf("198.51.100.25", "<>", "", timeout=2).result == "none"


def test_dns_timeout_is_temperror_and_bounded(zone):
    zone.set_delay(8.0)
    started = time.monotonic()
    result = check_spf("203.0.113.7", "alice@fabrikam.test", "h.test", timeout=0.5)
    assert result.result == "temperror"
    assert time.monotonic() - started < 6.0  # gave up well before the server's answer


def test_servfail_is_temperror(zone):
    zone.set_rcode("SERVFAIL")
    assert check_spf("203.0.113.7", "alice@fabrikam.test", "h.test", timeout=1).result == "temperror"


def test_invalid_ip_is_a_caller_error(zone):
    with pytest.raises(ValueError):
        check_spf("not-an-ip", "a@fabrikam.test", "h.test", timeout=1)


def test_identity_selection():
    assert spf_identity("<>", "Mail.Fabrikam.Test.") == ("postmaster@Mail.Fabrikam.Test",
                                                         "mail.fabrikam.test", "helo")
    assert spf_identity("<a@B.test>", "h") == ("a@B.test", "b.test", "mailfrom")


@pytest.mark.parametrize("reverse", ["timeout", "cname-loop", "ptr-name-timeout"])
def test_the_senders_own_reverse_zone_cannot_turn_fail_into_temperror(zone, reverse):
    """RFC 7208 §5.5: DNS errors in `ptr` mean no match (or skip that name). The reverse zone of
    198.51.100.9 belongs to the attacker; a temperror would keep DMARC from acting."""
    zone.add("ptr.test", "TXT", "v=spf1 ptr -all")
    rev = "9.100.51.198.in-addr.arpa"
    if reverse == "timeout":
        zone.silence(rev)
    elif reverse == "cname-loop":
        zone.add(rev, "PTR", "loop.attacker.test")
        zone.add("loop.attacker.test", "CNAME", "loop.attacker.test")
    else:
        zone.add(rev, "PTR", "slow.attacker.test")
        zone.silence("slow.attacker.test")
    assert check_spf("198.51.100.9", "ceo@ptr.test", "h.example", timeout=2).result == "fail"
