"""Issue 18: outbound TLS by MX is opportunistic by default (RFC 7435: STARTTLS whenever offered,
clear text when not — Exchange Online's default) and required for the domains a per-domain
policy names. Real sockets: a loopback SMTP server with or without STARTTLS, the loopback DNS."""

from __future__ import annotations

import asyncio

import pytest

from rig import RecordingSink
from mxgate.auth.dns import make_resolver
from mxgate.policy.document import load_toml
from mxgate.queue.outbound import Route, connector_route, resolve_mx, tls_context_for, tls_required
from mxgate.queue.relay import RelaySettings, relay

MESSAGE = b"From: a@contoso.test\r\nTo: b@fabrikam.test\r\nSubject: x\r\n\r\nhello\r\n"


@pytest.fixture
def sink(test_ca):
    s = RecordingSink(test_ca["server_cert"], test_ca["server_key"])
    yield s
    s.close()


def _send(sink, require_tls: bool):
    settings = RelaySettings((sink.address,), tls_context_for("encryption_only", None), require_tls=require_tls)
    return asyncio.run(relay(settings, "a@contoso.test", ["b@fabrikam.test"], MESSAGE))


def test_opportunistic_uses_starttls_when_offered_and_clear_text_when_not(sink):
    assert _send(sink, require_tls=False).outcomes[0].state == "delivered"
    assert sink.messages[-1]["tls"] is True  # offered: always used
    sink.offer_starttls = False  # a server without STARTTLS (a downgrade, or an old MTA)
    assert _send(sink, require_tls=False).outcomes[0].state == "delivered"
    assert sink.messages[-1]["tls"] is False


def test_a_domain_that_requires_tls_gets_no_mail_in_clear_text(sink):
    sink.offer_starttls = False
    result = _send(sink, require_tls=True)
    assert result.outcomes[0].state == "deferred" and "STARTTLS not offered" in result.outcomes[0].diagnostic
    assert sink.messages == []


def test_per_domain_policy_and_routes():
    assert tls_required("fabrikam.test", ["fabrikam.test"]) and tls_required("mx.fabrikam.test", ["*.fabrikam.test"])
    assert not tls_required("fabrikam.test", ["*.fabrikam.test"]) and not tls_required("evil-fabrikam.test", ["*.fabrikam.test"])
    policy = load_toml('[organization]\nname = "Contoso"\n[[accepted_domain]]\nname = "contoso.test"\n')
    assert connector_route(policy, "fabrikam.test").require_tls is False  # no connector: opportunistic


def test_resolve_mx_applies_the_per_domain_policy(dns):
    dns.add("fabrikam.test", "MX", (10, "mx.fabrikam.test"))
    dns.add("mx.fabrikam.test", "A", "127.0.0.88")
    resolver = make_resolver([dns.address], 2.0).aio

    async def both():
        base = Route("mx", "mx:fabrikam.test", require_tls=False)
        return (await resolve_mx(base, "fabrikam.test", resolver),
                await resolve_mx(base, "fabrikam.test", resolver, ["fabrikam.test"]))

    plain, required = asyncio.run(both())
    assert plain.hosts == ("127.0.0.88:25",) and plain.require_tls is False
    assert required.require_tls is True


def test_plan_mx_tls_dane_first_then_mta_sts_then_the_domain_setting():
    """Pure decision (queue/outbound.plan_mx_tls): RFC 8461 §2 (DANE wins), §5.1 (enforce: listed
    hosts only), RFC 7672 §2.2 (failed TLSA lookup: host not used)."""
    from mxgate.probe.mx import MxHost
    from mxgate.queue.dane import Tlsa
    from mxgate.queue.mtasts import StsPolicy
    from mxgate.queue.outbound import MxTlsFacts, plan_mx_tls

    hosts = [MxHost(10, "mx1.fabrikam.test", ("127.0.0.1",)), MxHost(20, "backup.other.test", ("127.0.0.2",)),
             MxHost(30, "mx3.fabrikam.test", ("127.0.0.3",))]
    pin = (Tlsa(3, 1, 1, b"x" * 32),)
    enforce = StsPolicy("enforce", ("*.fabrikam.test",), 86400)
    planned, skipped = plan_mx_tls(hosts, MxTlsFacts(enforce, {"backup.other.test": pin, "mx3.fabrikam.test": None}), False)
    by = {h: t for h, t in planned}
    assert by["127.0.0.1:25"].policy == "sts" and by["127.0.0.1:25"].require and by["127.0.0.1:25"].name == "mx1.fabrikam.test"
    assert by["127.0.0.2:25"].policy == "tlsa" and by["127.0.0.2:25"].tlsa == pin  # not listed, but DANE applies
    assert "127.0.0.3:25" not in by and "TLSA lookup failed" in skipped
    planned, skipped = plan_mx_tls(hosts[1:2], MxTlsFacts(enforce, {}), False)
    assert planned == [] and "not an mx" in skipped
    [(_, t)] = plan_mx_tls(hosts[:1], MxTlsFacts(StsPolicy("testing", ("x",), 1)), False)[0]
    assert t.testing and not t.require and t.policy == "sts"
    [(_, t)] = plan_mx_tls(hosts[:1], MxTlsFacts(), True)[0]
    assert t.require and t.policy == "no-policy-found" and not t.tlsa


# --- an outbound connector's TlsDomain (domain_validation) -----------------------------------
# The sink's certificate (tests/conftest.py test_ca) names localhost, 127.0.0.1, ::1 and
# mx.contoso.test. The smart host is 127.0.0.1: before TlsDomain was honoured, the host's own
# address was checked, so a certificate for *any* name the host carried passed.

def _partner_policy(route: str, tls_domain: str, tls_settings: str = "domain_validation"):
    """Contoso with one outbound connector to fabrikam.test; `route` is its smart_hosts or
    use_mx_record line."""
    return load_toml(f"""[organization]
name = "Contoso"
[[accepted_domain]]
name = "contoso.test"
[[outbound_connector]]
name = "Partner"
recipient_domains = ["fabrikam.test"]
{route}
tls_settings = "{tls_settings}"
tls_domain = "{tls_domain}"
""")


def _connector_send(sink, test_ca, tls_domain: str, *, tls_settings: str = "domain_validation"):
    from mxgate.queue.outbound import connector_route

    policy = _partner_policy(f'smart_hosts = ["{sink.address}"]', tls_domain, tls_settings)
    route = connector_route(policy, "fabrikam.test")
    settings = RelaySettings(route.hosts, tls_context_for(route.tls, test_ca["ca"]), tls_name=route.tls_name)
    return route, asyncio.run(relay(settings, "a@contoso.test", ["b@fabrikam.test"], MESSAGE))


@pytest.mark.parametrize("tls_domain", ["mx.contoso.test", "*.contoso.test", "MX.Contoso.Test"])
def test_domain_validation_accepts_a_certificate_for_the_tls_domain(sink, test_ca, tls_domain):
    route, result = _connector_send(sink, test_ca, tls_domain)
    assert route.tls_name == tls_domain.lower()
    assert result.outcomes[0].state == "delivered", result
    assert sink.messages[-1]["tls"] is True


@pytest.mark.parametrize("tls_domain", ["mail.fabrikam.test", "*.fabrikam.test", "*.mx.contoso.test"])
def test_domain_validation_refuses_a_certificate_not_for_the_tls_domain(sink, test_ca, tls_domain):
    """The attacker's case: the host's certificate is valid (right CA, names the host connected
    to) but not for the partner domain the admin named: no mail goes there."""
    route, result = _connector_send(sink, test_ca, tls_domain)
    assert result.outcomes[0].state == "deferred", result
    assert "certificate" in result.outcomes[0].diagnostic.lower() or "TlsDomain" in result.outcomes[0].diagnostic
    assert sink.messages == []


def test_tls_domain_is_ignored_below_domain_validation(sink, test_ca):
    route, result = _connector_send(sink, test_ca, "mail.fabrikam.test", tls_settings="certificate_validation")
    assert route.tls_name == "" and result.outcomes[0].state == "delivered"


def test_pooled_sessions_are_not_shared_between_tls_names(sink, test_ca):
    """A session verified for one TlsDomain is never reused for a route naming another."""
    from mxgate.queue.relay import SessionPool

    async def keys():
        ctx = tls_context_for("domain_validation", test_ca["ca"])
        a = RelaySettings((sink.address,), ctx, tls_name="mx.contoso.test")
        b = RelaySettings((sink.address,), ctx, tls_name="mail.fabrikam.test")
        return SessionPool.key(a, sink.address), SessionPool.key(b, sink.address)

    a, b = asyncio.run(keys())
    assert a != b


def test_tls_domain_syntax_is_checked():
    from mxgate.errors import PolicyError
    from mxgate.policy.validate import check_policy

    for bad in ("*", "a.*.contoso.test", "contoso.*", "not a name"):
        with pytest.raises(PolicyError):
            check_policy(_partner_policy('smart_hosts = ["127.0.0.1:25"]', bad))


def test_tls_domain_carries_to_mx_delivery(dns):
    """A connector by MX with domain_validation checks TlsDomain on each MX host without its own
    MTA-STS/DANE policy (relay.py: a host with its own context keeps its MX name)."""
    from mxgate.queue.outbound import connector_route

    dns.add("fabrikam.test", "MX", (10, "mx.fabrikam.test"))
    dns.add("mx.fabrikam.test", "A", "127.0.0.88")
    policy = _partner_policy("use_mx_record = true", "*.fabrikam.test")
    route = connector_route(policy, "fabrikam.test")
    assert route.tls_name == "*.fabrikam.test" and route.tls == "certificate_validation" and route.require_tls
    resolved = asyncio.run(resolve_mx(route, "fabrikam.test", make_resolver([dns.address], 2.0).aio))
    assert resolved.hosts == ("127.0.0.88:25",) and resolved.tls_name == "*.fabrikam.test"


@pytest.mark.parametrize("idle,reopened", [(12, 0), (8, 4)])
def test_relay_keeps_as_many_idle_sessions_as_it_is_told(sink, idle, reopened):
    """Issue 19: the gateway's downstream relay keeps as many idle sessions as it relays at once
    (`idle_sessions` = relay_concurrency); with fewer, each burst past the limit ended in QUIT and
    the next burst paid a new TCP + STARTTLS + EHLO for each of them (P3: 199 for 600 messages)."""
    from mxgate.queue.relay import POOL

    async def main():
        settings = RelaySettings((sink.address,), tls_context_for("encryption_only", None), idle_sessions=idle)

        async def burst():
            results = await asyncio.gather(*(relay(settings, "a@contoso.test", ["b@fabrikam.test"], MESSAGE)
                                             for _ in range(12)))
            assert all(r.outcomes[0].state == "delivered" for r in results)

        await burst()
        opened = len(sink.peers)
        await burst()
        POOL.close_for_this_loop()
        return opened, len(sink.peers) - opened

    assert asyncio.run(main()) == (12, reopened)
    assert len(sink.messages) == 24 and all(m["tls"] for m in sink.messages)
