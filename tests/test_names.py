"""mxgate/names.py: the one spelling of domains, IP addresses and host:port, and its users."""

from __future__ import annotations

import ipaddress

import pytest

from mxgate.names import format_hostport, is_valid_domain, normalize_domain, normalize_ip, parse_hostport
from mxgate.policy.validate import _is_host_port


@pytest.mark.parametrize("text, parsed", [
    ("127.0.0.1:25", ("127.0.0.1", 25)), ("[::1]:2525", ("::1", 2525)), ("mx.test:587", ("mx.test", 587)),
])
def test_parse_hostport_requires_a_port_unless_given_one(text, parsed):
    assert parse_hostport(text) == parsed
    with pytest.raises(ValueError, match="missing port"):
        parse_hostport(text.rsplit(":", 1)[0])


def test_port_zero_only_for_listeners():
    with pytest.raises(ValueError):
        parse_hostport("127.0.0.1:0")
    assert parse_hostport("127.0.0.1:0", min_port=0) == ("127.0.0.1", 0)


@pytest.mark.parametrize("host, port, text", [("::1", 25, "[::1]:25"), ("mx.test", 25, "mx.test:25")])
def test_format_hostport_round_trips(host, port, text):
    assert format_hostport(host, port) == text and parse_hostport(text) == (host, port)


def test_normalize_ip_maps_v4_in_v6_and_drops_zone_ids():
    assert normalize_ip("::ffff:127.0.0.66") == ipaddress.IPv4Address("127.0.0.66")  # RFC 4291 §2.5.5.2
    assert normalize_ip("[fe80::1%eth0]") == ipaddress.IPv6Address("fe80::1")
    with pytest.raises(ValueError):
        normalize_ip("not-an-ip")


def test_normalize_domain():
    assert normalize_domain(" Contoso.TEST. ") == "contoso.test"
    assert normalize_domain("bücher.example") == "xn--bcher-kva.example"


@pytest.mark.parametrize("name", ["contoso.test..", "contoso.test...", ".", "..", "bücher.example.."])
def test_a_name_with_an_empty_last_label_stays_invalid(name):
    """Only the root's one trailing dot is stripped: "contoso.test.." must not become a valid
    "contoso.test." that a second normalisation (or a caller) then turns into "contoso.test"."""
    assert not is_valid_domain(name)
    assert not is_valid_domain(normalize_domain(name))
    assert normalize_domain(normalize_domain(name)) == normalize_domain(name)  # idempotent


@pytest.mark.parametrize("text, ok", [
    ("gw.contoso.test", True), ("gw.contoso.test:2526", True), ("127.0.0.10:2526", True), ("[::1]:2526", True),
    ("[::1]", True), ("gw.contoso.test:0", False), ("gw.contoso.test:70000", False), ("[not-ip]:25", False),
    ("bad host:25", False), ("", False), ("gw..test", False),
])
def test_smart_host_validation_uses_the_same_parser(text, ok):
    assert _is_host_port(text) is ok
