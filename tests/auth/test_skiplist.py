"""Skip-list walk (mail-flow.md §4) and the ef_users scope, as pure golden cases."""

import ipaddress
import time
from dataclasses import replace

import pytest

from mxgate.auth.received import parse_received
from mxgate.auth.skiplist import (
    DEFAULT_NON_ROUTABLE,
    MAX_WALK_HEADERS,
    SkipListSettings,
    ef_applies,
    find_original_sender,
)

GATEWAY = "192.0.2.10"  # a documentation address: counts as Internet, so only trust makes it skippable
LAST_IP = SkipListSettings(skip_last_ip=True, skip_ips=())


def hop(ip, helo="sender.example", by="gw.example"):
    return f"from {helo} ({helo} [{ip}]) by {by} with ESMTPS id X; Mon, 1 Jan 2024 00:00:00 +0000"


def ip(text):
    return ipaddress.ip_address(text)


def test_off_when_nothing_configured():
    result = find_original_sender([hop("203.0.113.5")], GATEWAY, SkipListSettings(False, ()))
    assert (result.status, result.rule, result.original_ip) == ("off", "disabled", None)


def test_skip_last_ip_takes_the_top_header():
    headers = [hop("203.0.113.5", helo="mail.sender.example"), hop("198.51.100.1")]
    result = find_original_sender(headers, GATEWAY, LAST_IP)
    assert result.status == "detected"
    assert result.original_ip == ip("203.0.113.5")
    assert result.original_helo == "mail.sender.example"
    assert (result.header_index, result.rule) == (0, "skip-last-ip")
    assert "203.0.113.5" in result.explanation and "header 0" in result.explanation


def test_skip_last_ip_ignores_skip_ips():
    settings = SkipListSettings(skip_last_ip=True, skip_ips=("203.0.113.0/24",))
    result = find_original_sender([hop("203.0.113.5"), hop("198.51.100.1")], GATEWAY, settings)
    assert result.original_ip == ip("203.0.113.5")


def test_skip_ips_cidr_walks_past_several_trusted_hops():
    settings = SkipListSettings(False, ("192.0.2.0/24", "198.51.100.128/25"))
    headers = [hop("198.51.100.200"), hop("192.0.2.77"), hop("203.0.113.9", helo="orig.example")]
    result = find_original_sender(headers, GATEWAY, settings)
    assert (result.status, result.original_ip, result.header_index) == ("detected", ip("203.0.113.9"), 2)
    assert (result.original_helo, result.rule) == ("orig.example", "skip-ips")


def test_skip_ips_ipv6_cidr():
    settings = SkipListSettings(False, (ipaddress.ip_network("2001:db8:1::/48"),))
    headers = [hop("IPv6:2001:db8:1::25"), hop("IPv6:2001:db8:2::1", helo="v6.example")]
    result = find_original_sender(headers, "2001:db8:1::10", settings)
    assert (result.original_ip, result.header_index) == (ip("2001:db8:2::1"), 1)


def test_connecting_ip_outside_skip_ips_means_no_header_is_trusted():
    settings = SkipListSettings(False, ("192.0.2.0/24",))
    result = find_original_sender([hop("203.0.113.5")], "198.51.100.99", settings)
    assert (result.status, result.rule, result.original_ip) == ("none", "connecting-ip-not-trusted", None)


def test_non_routable_connecting_ip_is_not_trusted_by_itself():
    settings = SkipListSettings(False, ("192.0.2.0/24",))
    result = find_original_sender([hop("203.0.113.5")], "10.0.0.1", settings)
    assert result.rule == "connecting-ip-not-trusted"


def test_non_routable_hops_in_between_are_skipped():
    headers = [hop("10.1.2.3"), hop("IPv6:fd00::5"), hop("169.254.1.1"), hop("203.0.113.50")]
    result = find_original_sender(headers, GATEWAY, LAST_IP)
    assert (result.original_ip, result.header_index, result.rule) == (ip("203.0.113.50"), 3, "non-routable")
    assert "10.1.2.3" in result.explanation


def test_three_forged_headers_below_the_real_hop_are_never_read():
    real = hop("203.0.113.66", helo="spammer.example")
    forged = [hop("192.0.2.10"), hop("10.0.0.1"), hop("198.51.100.7", helo="bank.example")]
    settings = SkipListSettings(False, ("192.0.2.0/24",))
    for s in (LAST_IP, settings):
        result = find_original_sender([real, *forged], GATEWAY, s)
        assert (result.original_ip, result.original_helo, result.header_index) == (
            ip("203.0.113.66"), "spammer.example", 0)


def test_forged_headers_alone_cannot_make_the_gateway_skippable():
    # A bypass attempt straight from the Internet, carrying headers naming the gateway.
    settings = SkipListSettings(False, ("192.0.2.0/24",))
    result = find_original_sender([hop("192.0.2.10"), hop("10.0.0.1")], "203.0.113.66", settings)
    assert (result.status, result.original_ip) == ("none", None)


def test_headers_without_from_or_local_handovers_are_passed_over():
    headers = [
        "by gw.example (Postfix, from userid 0) id 1; Mon, 1 Jan 2024",
        "(qmail 27981 invoked by uid 225); 1 Nov 2003 07:05:19 -0000",
        "from user by gw.example with local (Exim 4.96) id 1qA-0001;",
        hop("203.0.113.7"),
    ]
    result = find_original_sender(headers, GATEWAY, LAST_IP)
    assert (result.original_ip, result.header_index) == (ip("203.0.113.7"), 3)


# A trusted hop whose peer cannot be read (adversarial.md §9): each written by the trusted
# hop about a client that chose its HELO; forged headers below name an address the attacker's
# SPF record authorises. None of them may be believed.
UNREADABLE = [
    "from mail.example HELO 203.0.113.66 by gw.example with SMTP; d",
    "from a (b [203.0.113.66]) (c (unknown [198.51.100.9]) by gw.example (Postfix) with ESMTP id 1; d",
    "from [203.0.113.66] by gw.example (Postfix) with ESMTP id 1; d",
    "from localhost (root@localhost) by gw.example (8.14/Submit) id r1;",
    "from garbage (((",
]


@pytest.mark.parametrize("header", UNREADABLE)
def test_an_unreadable_trusted_hop_stops_the_walk(header):
    forged_below = hop("203.0.113.66", helo="spf-authorised.example")
    result = find_original_sender([header, forged_below], GATEWAY, LAST_IP)
    assert (result.status, result.rule, result.header_index) == ("stopped", "unreadable-trusted-hop", 0)
    assert result.original_ip is None and result.last_trusted_ip == ip(GATEWAY)
    assert "no header from it down is believed" in result.explanation
    assert f"authentication uses {GATEWAY}" in result.explanation


def test_stop_below_a_skipped_hop_judges_the_last_trusted_address():
    headers = [hop("10.1.2.3", helo="relay.internal"), "from x HELO 203.0.113.66 by relay.internal with SMTP; d",
               hop("203.0.113.66")]
    result = find_original_sender(headers, GATEWAY, LAST_IP)
    assert (result.status, result.header_index, result.last_trusted_ip) == ("stopped", 1, ip("10.1.2.3"))
    assert "written by trusted hop 10.1.2.3" in result.explanation


def test_the_stop_reason_names_the_parsers_finding():
    result = find_original_sender(["from a (b [203.0.113.66]) (c by gw.example (Postfix); d"], GATEWAY, LAST_IP)
    assert "unbalanced parentheses" in result.explanation


def test_nothing_usable_found():
    for headers in ([], ["garbage ((("], ["by x ((("], [hop("10.0.0.1"), hop("127.0.0.1")]):
        result = find_original_sender(headers, GATEWAY, LAST_IP)
        assert (result.status, result.rule, result.original_ip) == ("none", "no-usable-header", None)
        assert result.header_index is None


def test_v4_mapped_everywhere_is_matched_as_ipv4():
    settings = SkipListSettings(False, ("::ffff:192.0.2.0/120",))
    assert settings.skip_ips == (ipaddress.ip_network("192.0.2.0/24"),)
    headers = [hop("::ffff:192.0.2.20"), hop("IPv6:::ffff:203.0.113.30")]
    result = find_original_sender(headers, "::ffff:192.0.2.10", settings)
    assert result.original_ip == ip("203.0.113.30")
    assert isinstance(result.original_ip, ipaddress.IPv4Address)
    assert result.header_index == 1


@pytest.mark.parametrize("doc", ["192.0.2.55", "198.51.100.55", "203.0.113.55", "IPv6:2001:db8::55"])
def test_documentation_ranges_count_as_internet(doc):
    result = find_original_sender([hop(doc)], GATEWAY, LAST_IP)
    assert result.status == "detected"
    assert result.original_ip == ip(doc.removeprefix("IPv6:"))


def test_default_non_routable_is_not_pythons_is_private():
    assert not any(ip("192.0.2.1") in net for net in DEFAULT_NON_ROUTABLE)
    assert ip("192.0.2.1").is_private  # which is why is_private must not be used


def test_custom_non_routable_lets_loopback_senders_count_as_external():
    headers = [hop("127.0.0.66", helo="loop-sender"), hop("203.0.113.1")]
    default = find_original_sender(headers, "127.0.0.1", LAST_IP)
    assert default.original_ip == ip("203.0.113.1")
    custom = SkipListSettings(True, (), non_routable=("10.0.0.0/8",))
    result = find_original_sender(headers, "127.0.0.1", custom)
    assert (result.original_ip, result.original_helo, result.header_index) == (ip("127.0.0.66"), "loop-sender", 0)


def test_own_header_prepended_is_stepped_over():
    own = hop(GATEWAY, helo="gw.example", by="mailbox.example")
    result = find_original_sender([own, hop("203.0.113.5")], GATEWAY, LAST_IP)
    assert (result.original_ip, result.header_index) == (ip("203.0.113.5"), 1)


def test_accepts_parsed_hops():
    hops = [parse_received(hop("10.0.0.1")), parse_received(hop("203.0.113.5"))]
    result = find_original_sender(hops, ip(GATEWAY), LAST_IP)
    assert result.original_ip == ip("203.0.113.5")


def test_walk_is_bounded():
    headers = [hop("10.0.0.1")] * 1000 + [hop("203.0.113.5")]
    start = time.process_time()  # CPU, not wall time: load on the machine must not fail it
    result = find_original_sender(headers, GATEWAY, LAST_IP)
    assert time.process_time() - start < 2.0
    assert (result.status, result.rule) == ("none", "walk-limit")
    assert str(MAX_WALK_HEADERS) in result.explanation
    within = [hop("10.0.0.1")] * (MAX_WALK_HEADERS - 1) + [hop("203.0.113.5")]
    assert find_original_sender(within, GATEWAY, LAST_IP).header_index == MAX_WALK_HEADERS - 1


def test_explanation_is_one_clean_line_even_with_hostile_helo():
    hostile = replace(parse_received(hop("203.0.113.5")), from_helo="evil\r\nX-Injected: 1")
    result = find_original_sender([hostile], GATEWAY, LAST_IP)
    assert "\n" not in result.explanation and "\r" not in result.explanation
    assert result.original_helo == "evil\r\nX-Injected: 1"  # raw value kept; writers escape


@pytest.mark.parametrize(
    "users,recipients,expected",
    [
        ([], ["a@x.example"], True),
        (["a@x.example"], ["A@X.Example"], True),
        (["a@x.example", "b@x.example"], ["a@x.example", "b@x.example"], True),
        (["a@x.example"], ["a@x.example", "b@x.example"], False),
        (["a@x.example"], ["c@x.example"], False),
        (["a@x.example"], [], False),
        (["<a@x.example>"], [" a@x.example "], True),
    ],
)
def test_ef_applies(users, recipients, expected):
    assert ef_applies(users, recipients) is expected


def test_skip_last_ip_trusts_exactly_each_connecting_address_in_turn():
    """The connecting address's own network is remembered per address (issue 19): each walk
    trusts its own connecting IP and nothing else — not the one of the walk before, not a
    neighbour, not the other family's address with the same number."""
    pairs = [("192.0.2.1", "192.0.2.2"), ("192.0.2.2", "192.0.2.1"), ("::c000:201", "192.0.2.1"),
             ("192.0.2.1", "::c000:201"), ("2001:db8::1", "2001:db8::2"), ("192.0.2.1", "192.0.2.1")]
    for _ in range(2):
        for connecting, named in pairs:
            headers = [hop(connecting), hop(named), hop("203.0.113.9")]
            result = find_original_sender(headers, connecting, LAST_IP)
            # The top header repeats the connecting address: skipped as the trusted hop itself.
            expected = "203.0.113.9" if named == connecting else named
            assert (result.status, result.original_ip) == ("detected", ip(expected)), (connecting, named)
