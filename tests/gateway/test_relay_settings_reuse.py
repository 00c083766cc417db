"""The relay settings the queue and cut-through read for every message are made once, not per call,
and follow a renewed client TLS context (server/gateway.py `relay_settings_for`,
server/cutthrough.py `CutThrough._settings`): a memo that kept the first context would relay with
a certificate that was replaced (or the first connect timeout), so each test also renews it."""

from __future__ import annotations

import ssl
from types import SimpleNamespace

from mxgate.queue.relay import RelaySettings
from mxgate.server.cutthrough import CONNECT_BUDGET, CutThrough
from mxgate.server.gateway import relay_settings_for


def _gateway_section(**over):
    g = dict(downstream=["127.0.0.1:2525", "127.0.0.2:2525"], source_address="127.0.0.9", hostname="gw.contoso.test",
             relay_connect_timeout=30.0, relay_timeout=120.0, downstream_tls_name="mbx.contoso.test",
             relay_concurrency=7)
    g.update(over)
    return SimpleNamespace(**g)


def _context() -> ssl.SSLContext:
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def test_one_settings_object_while_the_context_is_the_same_and_a_new_one_after_renewal():
    first, renewed = _context(), _context()
    current = [first]
    settings = relay_settings_for(_gateway_section(), lambda: current[0])
    a = settings()
    assert settings() is a  # not made again per message
    assert a == RelaySettings(("127.0.0.1:2525", "127.0.0.2:2525"), first, "127.0.0.9", "gw.contoso.test", 30.0, 120.0,
                              "mbx.contoso.test", idle_sessions=7)
    current[0] = renewed  # the client certificate was renewed (ReloadingContext built a new context)
    b = settings()
    assert b.tls_context is renewed and b is not a
    assert b == RelaySettings(("127.0.0.1:2525", "127.0.0.2:2525"), renewed, "127.0.0.9", "gw.contoso.test", 30.0,
                              120.0, "mbx.contoso.test", idle_sessions=7)
    assert settings() is b


def test_cut_through_caps_the_connect_timeout_of_the_settings_in_force():
    contexts = [_context(), _context()]
    current = [contexts[0]]
    settings = relay_settings_for(_gateway_section(relay_connect_timeout=30.0), lambda: current[0])
    ct = CutThrough(settings, runner=SimpleNamespace(), budget=20.0, backoff=60.0)
    a = ct._settings()
    assert a.connect_timeout == CONNECT_BUDGET and a.tls_context is contexts[0]
    assert a.command_timeout == 120.0 and a.hosts == settings().hosts
    assert ct._settings() is a  # copied once, not per message
    current[0] = contexts[1]
    b = ct._settings()
    assert b.tls_context is contexts[1] and b.connect_timeout == CONNECT_BUDGET


def test_cut_through_keeps_a_shorter_connect_timeout_and_follows_a_new_settings_object():
    made = [RelaySettings(("127.0.0.1:2525",), _context(), connect_timeout=2.0)]
    ct = CutThrough(lambda: made[0], runner=SimpleNamespace(), budget=20.0, backoff=60.0)
    assert ct._settings().connect_timeout == 2.0
    made[0] = RelaySettings(("127.0.0.3:2525",), _context(), connect_timeout=9.0)
    assert ct._settings().hosts == ("127.0.0.3:2525",) and ct._settings().connect_timeout == CONNECT_BUDGET
