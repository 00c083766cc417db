"""Issue 19: the gateway's ARC seal of a short message held in memory runs on the event loop, not
in a heavy thread (the hand-off and the GIL hand-overs with the busy loop cost more than the ~1 ms
seal). Whatever needs I/O or is large still goes to the heavy threads: an inbound ARC chain (its
validation asks DNS), a message past SEAL_ON_LOOP_MAX, a key the keyring must read from the
database, a key not yet loaded. The seals made on the loop verify like the others."""

from __future__ import annotations

import time

from gwkit import gw_port
from rig import INTERNET, maildir_messages, send_message, simple_message, wait_until

from mxgate.auth.arc import seal_arc, validate_arc
from mxgate.auth.dkim import generate_dkim_key
from mxgate.auth.dns import dnsfunc_for, make_resolver
from mxgate.auth.rsa_signing import signing_key_loaded
from mxgate.server.gateway import SEAL_ON_LOOP_MAX

ARC_STRAY = (b"ARC-Authentication-Results: i=1; evil.test; dmarc=pass header.from=fabrikam.test\r\n")


def _heavy_jobs(gw) -> int:
    return gw.node.roles["gateway"].sv.pipeline.heavy_threads.jobs


def _send(gw, data: bytes) -> None:
    r = send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="sender@fabrikam.test",
                     rcpts=["bob@contoso.test"], data=data)
    assert r["end"][0] == 250, r


def _gateway(make_gateway):
    """A gateway whose keyring's clock stands still: the ARC key loaded by the first message stays
    fresh for the whole test. On the wall clock it went stale `key_refresh` (2 s) after that load;
    on a loaded machine a later short message was then sealed in a heavy thread (the keyring must
    read the database) and the job counts and `cached` asserts below failed."""
    gw = make_gateway()
    still = time.time()
    gw.node.keyring.clock = lambda: still
    return gw


def _stored(mailbox, n: int) -> list[bytes]:
    assert wait_until(lambda: len(maildir_messages(mailbox.home, "bob@contoso.test")) >= n, timeout=15)
    return maildir_messages(mailbox.home, "bob@contoso.test")


def test_short_messages_are_sealed_on_the_loop_and_their_seals_verify(make_gateway, mailbox, dns):
    dns.add("fabrikam.test", "TXT", "v=spf1 ip4:127.0.0.77 -all")
    gw = _gateway(make_gateway)
    _send(gw, simple_message(to="bob@contoso.test", subject="first"))  # loads the key (in a heavy thread)
    _stored(mailbox, 1)
    before = _heavy_jobs(gw)
    for i in range(3):
        _send(gw, simple_message(to="bob@contoso.test", subject=f"on the loop {i}"))
    stored = _stored(mailbox, 4)
    assert _heavy_jobs(gw) == before  # no hand-off for these three
    dnsfunc = dnsfunc_for(make_resolver([dns.address], 2.0))
    for message in stored:
        assert b"ARC-Seal: i=1; cv=none;" in message
        assert validate_arc(message, dnsfunc).status == "pass"


def test_inbound_arc_fields_and_large_messages_are_sealed_in_a_heavy_thread(make_gateway, mailbox, dns):
    """An ARC field from the sender makes the gateway validate the chain (DNS: never on the loop);
    a message past SEAL_ON_LOOP_MAX would hold the loop too long."""
    dns.add("fabrikam.test", "TXT", "v=spf1 ip4:127.0.0.77 -all")
    gw = _gateway(make_gateway)
    _send(gw, simple_message(to="bob@contoso.test", subject="first"))
    _stored(mailbox, 1)
    jobs = _heavy_jobs(gw)
    _send(gw, ARC_STRAY + simple_message(to="bob@contoso.test", subject="stray ARC field"))
    stored = _stored(mailbox, 2)
    assert _heavy_jobs(gw) == jobs + 1
    assert any(b"ARC-Seal: i=2; cv=fail;" in m for m in stored)
    line = "x" * 76 + "\r\n"
    big = simple_message(to="bob@contoso.test", subject="large", body=line * (SEAL_ON_LOOP_MAX // len(line) + 10))
    _send(gw, big)
    stored = _stored(mailbox, 3)
    assert _heavy_jobs(gw) == jobs + 2
    sealed_big = next(m for m in stored if b"Subject: large" in m)
    assert validate_arc(sealed_big, dnsfunc_for(make_resolver([dns.address], 2.0))).status == "pass"


def test_a_key_the_keyring_must_read_is_not_read_on_the_loop(make_gateway, mailbox, dns):
    """Past the keyring's refresh the key comes from the database: that seal goes to a thread."""
    dns.add("fabrikam.test", "TXT", "v=spf1 ip4:127.0.0.77 -all")
    gw = _gateway(make_gateway)
    _send(gw, simple_message(to="bob@contoso.test", subject="first"))
    _stored(mailbox, 1)
    keyring = gw.node.keyring
    assert keyring.cached("arc", "arc")
    keyring._cache.clear()  # as when `refresh` seconds have passed
    jobs = _heavy_jobs(gw)
    _send(gw, simple_message(to="bob@contoso.test", subject="stale key copy"))
    _stored(mailbox, 2)
    assert _heavy_jobs(gw) == jobs + 1 and keyring.cached("arc", "arc")


def test_keyring_cached_says_whether_a_read_would_ask_the_database(tmp_path):
    from mxgate.store.db import migrate, open_engine
    from mxgate.store.keys import KeyRing

    engine = open_engine(f"sqlite:///{tmp_path / 'k.db'}")
    migrate(engine)
    now = [1000.0]
    ring = KeyRing(engine, tmp_path, refresh=2.0, clock=lambda: now[0])
    try:
        assert not ring.cached("arc", "arc")
        ring.arc("sel")
        assert ring.cached("arc", "arc")
        now[0] += 1.9
        assert ring.cached("arc", "arc")
        now[0] += 0.2
        assert not ring.cached("arc", "arc")
    finally:
        engine.dispose()


def test_signing_key_loaded_only_after_a_signature_with_it():
    pem, _txt = generate_dkim_key()
    assert not signing_key_loaded(pem)
    message = simple_message().replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")
    seal_arc(message, "gw.mxgate.test", "mxgate.test", "s1", pem, "gw.mxgate.test; spf=pass smtp.mailfrom=fabrikam.test")
    assert signing_key_loaded(pem)
    assert not signing_key_loaded(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
