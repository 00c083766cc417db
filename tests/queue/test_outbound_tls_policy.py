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
