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
