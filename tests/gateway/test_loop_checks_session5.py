"""Issue 19, session 5: the gateway's checks answered on the event loop with less repeated work.

Each shortcut is compared with the code it replaced (kept here verbatim as the reference) on
input a sender controls: the DKIM loop predicate (one predicate, counting signatures from the
header fields parsed once per message), the pipeline that makes no task for a check answered
on the loop, a cached NXDOMAIN raised as a fresh exception without formatting it again, the
rDNS client parse remembered per address, and the score's From display check remembered per value.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import sys
from email.utils import getaddresses

import dns.exception
import dns.resolver
import dns.reversename
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dnsserver import TestDNSServer  # noqa: E402
from gwkit import message_facts  # noqa: E402

from mxgate.auth import headers as auth_headers  # noqa: E402
from mxgate.auth.dns import dnsfunc_for, install_default_resolver, make_resolver  # noqa: E402
from mxgate.auth.headers import parse_fields  # noqa: E402
from mxgate.filters import dkim, pipeline as pipeline_mod, rdns, score  # noqa: E402
from mxgate.filters import result as result_mod  # noqa: E402
from mxgate.filters.pipeline import AFTER_WALK, PARALLEL, Pipeline  # noqa: E402
from mxgate.filters.result import CheckEnv, MessageFacts  # noqa: E402
from mxgate.policy.gateway_checks import DEFAULTS, CheckSettings  # noqa: E402
from mxgate.smtp.message import decode_words  # noqa: E402
from mxgate.smtp.source import MessageSource  # noqa: E402

CLIENT = "192.0.2.9"


def _cfg(name: str, **over) -> CheckSettings:
    return CheckSettings(name, {**DEFAULTS[name], **over})


def _checks(**over) -> dict[str, CheckSettings]:
    return {n: _cfg(n, **over.get(n, {})) for n in DEFAULTS}


def _facts(message: bytes, *, spooled: bool = False, client: str = CLIENT) -> MessageFacts:
    return message_facts(message, client, spooled=spooled)


# --- DKIM: one loop predicate, signatures counted from the fields parsed once -------------------

def _old_fits_on_loop(facts: MessageFacts) -> bool:
    """filters/dkim.fits_on_loop before session 5 (its own parse of the head)."""
    source = facts.source
    return (source.in_memory and source.size <= dkim.LOOP_MESSAGE_MAX
            and sum(1 for f in parse_fields(source.head) if f.name == b"dkim-signature") <= dkim.LOOP_SIGNATURES)


def _old_signed(facts: MessageFacts) -> bool:
    """filters/dkim.gather's test for an unsigned message before session 5."""
    return any(f.name == b"dkim-signature" for f in parse_fields(facts.source.head))


_SIG_LINES = [
    b"DKIM-Signature: v=1; a=rsa-sha256; d=fabrikam.test; s=s1; b=AAAA\r\n",
    b"dkim-signature: v=1; d=fabrikam.test\r\n",
    b"DKIM-SIGNATURE: v=1\r\n",
    b"DKIM-Signature : v=1; obs WSP before the colon\r\n",
    b"DKIM-Signature\t: v=1\r\n",
    b"X-DKIM-Signature: v=1\r\n",  # not a signature
    b"DKIM-Signature-Not: v=1\r\n",  # not a signature
    b"Subject: x\r\n DKIM-Signature: a continuation line, not a field\r\n",
    b"Comment: DKIM-Signature: inside a value\r\n",
    b"DKIM-Signature: v=1;\r\n\tb=folded\r\n",
    b"DKIM-Signature v=1 (no colon: not a field)\r\n",
]


def _generated_messages(seed: int = 19, n: int = 400):
    rnd = random.Random(seed)
    for _ in range(n):
        lines = [rnd.choice(_SIG_LINES) for _ in range(rnd.randrange(0, 6))]
        head = b"From: <a@fabrikam.test>\r\n" + b"".join(lines) + b"To: <b@contoso.test>\r\n"
        size = rnd.choice([10, 1000, dkim.LOOP_MESSAGE_MAX - 200, dkim.LOOP_MESSAGE_MAX + 10, 100_000])
        body = b"x" * max(0, size - len(head) - 2)
        yield head + b"\r\n" + body, rnd.random() < 0.2


def test_dkim_loop_predicate_answers_what_fits_on_loop_answered_for_signed_mail():
    """Signed messages: the one predicate is the old fits_on_loop (size, memory, signatures
    counted as verify_dkim selects them), on hostile field spellings; unsigned ones (which read
    neither DNS nor the body) are tried on the loop at any size; gather's unsigned test is the old one."""
    seen = set()
    for message, spooled in _generated_messages():
        facts = _facts(message, spooled=spooled)
        signed = _old_signed(facts)
        assert (dkim.signatures(facts) > 0) == signed
        assert dkim.signatures(facts) == sum(1 for f in parse_fields(facts.source.head) if f.name == b"dkim-signature")
        expected = _old_fits_on_loop(facts) if signed else True
        assert dkim.cached_on_loop(facts, _cfg("dkim")) == expected
        seen.add((signed, expected, spooled))
    assert len(seen) >= 5  # every branch met: unsigned, signed fitting, signed too large/many/spooled


def test_the_message_fields_are_parsed_once_for_the_dkim_predicate_and_gather(monkeypatch):
    """Review: the predicate no longer parses the head again; it reads facts.fields, parsed once."""
    calls = []
    real = result_mod.parse_fields
    monkeypatch.setattr(result_mod, "parse_fields", lambda head: calls.append(head) or real(head))
    assert not hasattr(dkim, "parse_fields") and not hasattr(dkim, "fits_on_loop")
    facts = _facts(b"From: <a@fabrikam.test>\r\nSubject: unsigned\r\n\r\nbody\r\n")
    assert dkim.cached_on_loop(facts, _cfg("dkim"))
    assert dkim.gather(facts, _cfg("dkim"), CheckEnv(None, None)) == ()
    assert dkim.signatures(facts) == 0
    assert len(calls) == 1


def test_the_pipeline_has_one_loop_predicate_per_check():
    """Review: `cached_on_loop(facts, cfg)` is the one mechanism; no separate fits_on_loop."""
    for module in PARALLEL + AFTER_WALK + pipeline_mod.AFTER:
        assert not hasattr(module, "fits_on_loop")
    assert getattr(dkim, "WHOLE_MESSAGE", False) is True


@pytest.fixture
def dns_server():
    with TestDNSServer() as server:
        server.add("fabrikam.test", "TXT", "v=spf1 ip4:192.0.2.9 -all")
        server.add("_dmarc.fabrikam.test", "TXT", "v=DMARC1; p=reject")
        server.add("9.2.0.192.in-addr.arpa", "PTR", "mail.fabrikam.test.")
        server.add("mail.fabrikam.test", "A", CLIENT)
        yield server


def test_an_unsigned_spooled_message_is_answered_on_the_loop_without_reading_its_body(dns_server):
    cached = make_resolver([dns_server.address], timeout=1.0, cache_size=100)
    previous = install_default_resolver(cached)
    message = b"From: <a@fabrikam.test>\r\nSubject: x\r\n\r\n" + b"y" * 200_000

    async def main():
        p = Pipeline(workers=4)
        try:
            facts = _facts(message, spooled=True)
            facts.source.read_all = None  # reading the body would fail the test
            before = p.threads.jobs
            result = await p._run_one(dkim, facts, _cfg("dkim"), CheckEnv(cached, dnsfunc_for(cached, 1.0),
                                                                          heavy=p.heavy))
            return result, p.threads.jobs - before
        finally:
            p.close()

    try:
        result, hops = asyncio.run(main())
    finally:
        install_default_resolver(previous)
    assert hops == 0 and result.outcome == "pass" and result.facts["result"] == "none"


# --- the pipeline: checks answered on the loop make no task ------------------------------------

async def _old_run(p: Pipeline, facts, checks, env, pre):
    """Pipeline._run before session 5: every parallel check a task beside the walk."""
    async def ready(result):
        return result

    async def after_walk():
        await p._walk(facts, checks, env)
        return [await p._run_one(m, facts, checks[m.NAME], env) for m in AFTER_WALK]

    *first, walked = await asyncio.gather(*(ready(pre[m.NAME]) if m.NAME in pre
                                            else p._run_one(m, facts, checks[m.NAME], env) for m in PARALLEL),
                                          after_walk())
    results = {r.check: r for r in [*first, *walked]}
    for m in pipeline_mod.AFTER:
        results[m.NAME] = await p._run_one(m, facts, checks[m.NAME], env)
    sc_cfg = checks["score"]
    sc = score.compute(results, facts.source.head, env.walk.text if env.walk is not None else b"", sc_cfg)
    if sc_cfg.enabled:
        results["score"] = score.decide(sc, sc_cfg)
    return pipeline_mod.decide_message(results, sc)


def _view(outcome):
    return (outcome.verdict, [(n, r.check, r.outcome, r.action, r.reason, r.detail, dict(r.facts))
                              for n, r in outcome.results.items()], outcome.score, outcome.tagged)


def test_the_pipeline_gives_the_old_outcome_with_checks_on_the_loop_and_in_workers(dns_server, monkeypatch):
    """The same verdict, results (in the same order: X-MXGate-Checks lists them so), score and
    tags as the task-per-check pipeline, whether every check answers on the loop, some wait for
    a worker (a cold cache, a spooled signed message), some are off, or connect-stage results
    stand in; and checks answered on the loop make no task."""
    from mxgate.auth.dkim import generate_dkim_key, sign_dkim

    pem, txt = generate_dkim_key()
    dns_server.add("s1._domainkey.fabrikam.test", "TXT", txt)
    plain = (b"From: <a@fabrikam.test>\r\nTo: <b@contoso.test>\r\nSubject: WIRE TRANSFER NOW\r\n"
             b"Message-ID: <1@fabrikam.test>\r\nDate: Wed, 2 Dec 2026 10:00:00 +0000\r\n\r\n"
             b"click here to verify your account\r\n")
    signed = sign_dkim(plain, "fabrikam.test", "s1", pem, include_headers=["From", "To", "Subject"]) + plain
    tampered = signed.replace(b"Subject: WIRE", b"Subject: wire")
    attach = (b"From: <a@fabrikam.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
              b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: application/octet-stream\r\n"
              b"Content-Disposition: attachment; filename=run.exe\r\n\r\nMZ\r\n--b--\r\n")
    cases = [(signed, False, {}, None), (tampered, False, {}, None), (plain, False, {}, None),
             (signed, True, {}, None), (attach, False, {}, None),
             (signed, False, {"spf": {"action": "off"}, "score": {"action": "off"}}, None),
             (tampered, False, {"dkim": {"action": "reject"}}, None),
             (plain, False, {}, "rdns")]
    tasks = []
    real_create = asyncio.BaseEventLoop.create_task

    def counting(loop, coro, **kw):
        tasks.append(getattr(coro, "__qualname__", repr(coro)))
        return real_create(loop, coro, **kw)

    async def run_all(cached, new: bool):
        p = Pipeline(workers=4, per_client=20)
        out = []
        try:
            for message, spooled, over, pre_name in cases:
                checks = _checks(**over)
                env = CheckEnv(cached, dnsfunc_for(cached, 1.0))
                facts = _facts(message, spooled=spooled)
                pre = {}
                if pre_name:
                    pre = {pre_name: await p._run_one(rdns, facts, checks[pre_name], CheckEnv(cached, dnsfunc_for(cached, 1.0)))}
                if new:
                    outcome = await p.run(facts, checks, env, precomputed=pre)
                else:
                    p._clients[facts.peer_ip] = 1
                    env.heavy = p.heavy
                    try:
                        outcome = await _old_run(p, facts, checks, env, pre)
                    finally:
                        del p._clients[facts.peer_ip]
                out.append(_view(outcome))
            return out
        finally:
            p.close()

    for cold in (True, False):
        results = {}
        for new in (False, True):
            cached = make_resolver([dns_server.address], timeout=1.0, cache_size=100)
            previous = install_default_resolver(cached)
            try:
                if not cold:  # warm the cache: every check then answers on the loop
                    asyncio.run(run_all(cached, True))
                monkeypatch.setattr(asyncio.BaseEventLoop, "create_task", counting)
                tasks.clear()
                results[new] = asyncio.run(run_all(cached, new))
                monkeypatch.undo()
                if new and not cold:
                    # The pipeline's only tasks: the spooled message's DKIM in a worker, beside its walk.
                    assert [t for t in tasks if t.startswith("Pipeline")] == ["Pipeline._run_in_worker",
                                                                              "Pipeline._run.<locals>.after_walk"]
            finally:
                install_default_resolver(previous)
        assert results[True] == results[False]
    verdicts = [v[0].action.value for v in results[True]]
    assert "reject" in verdicts and "accept" in verdicts  # the attachment, and clean mail


# --- a cached NXDOMAIN raised as a fresh exception ---------------------------------------------

def test_a_cached_nxdomain_is_a_fresh_exception_equal_to_a_new_one(dns_server):
    resolver = make_resolver([dns_server.address], timeout=1.0, cache_size=100)
    with pytest.raises(dns.resolver.NXDOMAIN) as first:
        resolver.resolve("missing.fabrikam.test", "TXT")
    raised = []
    for _ in range(3):
        with pytest.raises(dns.resolver.NXDOMAIN) as again:
            resolver.resolve("missing.fabrikam.test", "TXT")
        raised.append(again.value)
    cached = resolver.answers.get(next(iter(resolver.answers._items))).value
    reference = dns.resolver.NXDOMAIN(qnames=cached.qnames(), responses=cached.responses())
    assert len({id(e) for e in raised + [cached]}) == 4  # each raise its own object
    for exc in raised:
        assert type(exc) is dns.resolver.NXDOMAIN
        assert (str(exc), repr(exc), exc.args, exc.msg) == (str(reference), repr(reference), reference.args,
                                                            reference.msg)
        assert exc.kwargs == reference.kwargs and exc.kwargs is not cached.kwargs
        assert exc.qnames() == first.value.qnames() and exc.canonical_name == reference.canonical_name
        assert exc.__cause__ is None and exc.__context__ is None or exc.__context__ is not raised[0]
    assert raised[0].__traceback__ is not raised[1].__traceback__
    raised[0].kwargs["qnames"] = []  # a caller changing its copy changes no other raise
    with pytest.raises(dns.resolver.NXDOMAIN) as later:
        resolver.resolve("missing.fabrikam.test", "TXT")
    assert str(later.value) == str(reference)


# --- rDNS: the client's parse remembered per address --------------------------------------------

def _old_client(peer_ip: str):
    """rdns.gather's address handling before session 5."""
    addr = ipaddress.ip_address(peer_ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return addr, "A" if addr.version == 4 else "AAAA", dns.reversename.from_address(str(addr))


@pytest.mark.parametrize("peer", ["192.0.2.9", "::ffff:192.0.2.9", "::FFFF:C000:0209", "2001:DB8::1", "2001:db8::1",
                                  "0.0.0.0", "::1", "fe80::1", "127.0.0.10"])
def test_the_rdns_client_parse_is_the_old_one(peer):
    assert rdns._client(peer) == _old_client(peer)
    assert rdns._client(peer) == _old_client(peer)  # remembered: the same answer


@pytest.mark.parametrize("peer", ["", "not-an-ip", "192.0.2.300", "fe80::1%eth0x", "1.2.3.4 ", "::ffff:1.2.3"])
def test_a_client_that_is_not_an_address_still_raises_what_it_raised_every_time(peer):
    """Not an address (or a scoped one dnspython cannot reverse): the old error, on every call
    (an exception is never remembered as an answer)."""
    try:
        _old_client(peer)
    except Exception as exc:  # noqa: BLE001 - whatever it raised
        expected = type(exc)
    else:  # the parser accepts it: then both agree
        assert rdns._client(peer) == _old_client(peer)
        return
    for _ in range(2):
        with pytest.raises(expected):
            rdns._client(peer)


# --- score: the From display check remembered per value ----------------------------------------

def _old_display_has_address(value: bytes) -> bool:
    for display, addr in getaddresses([value.decode("utf-8", "replace")]):
        display = decode_words(display)  # session 10: encoded words read as a reader shows them
        if "@" in display and display.strip().lower() != addr.lower():
            return True
    return False


_FROMS = [b'"paypal@paypal.com" <x@evil.test>', b'"a@fabrikam.test" <a@fabrikam.test>', b"<a@fabrikam.test>",
          b'"A@FABRIKAM.TEST " <a@fabrikam.test>', b"a@fabrikam.test", b'"x" <a@b>, "c@d" <e@f>',
          b"=?utf-8?q?paypal=40paypal.com?= <x@evil.test>", b'"\xff\xfe@bad" <x@evil.test>', b"",
          b"(comment@x) <a@fabrikam.test>", b'"unterminated@x <a@b>', b"a@b (display@c)", b" \r\n\t\"p@q\" <r@s>",
          b'"' + b"x" * 1200 + b'@y" <z@w>', b"<" + b"a" * 990 + b"@b>",
          # Pairs a sender makes alike but for the display name: the first answer must not stand for the second.
          b'"PayPal Service" <' + b"s" * 60 + b'@evil.test>', b'"service@paypal.com" <' + b"s" * 60 + b'@evil.test>',
          b'"x" <a@fabrikam.test>', b'"x@y" <a@fabrikam.test>']


def test_the_from_display_check_answers_what_the_address_parse_answered():
    rnd = random.Random(5)
    values = list(_FROMS)
    for _ in range(300):
        values.append(b"".join(rnd.choice([b'"', b"@", b"<", b">", b",", b" ", b"a", b"B", b".", b"(", b")", b"\\",
                                            b"\xc3\xa9", b"=?", b"?="]) for _ in range(rnd.randrange(1, 30))))
    for value in values + values:  # twice: the remembered answers too
        assert score._display_has_address(value) == _old_display_has_address(value), value
        field = auth_headers.HeaderField(b"from", b"From: " + value + b"\r\n")
        assert score._display_has_address(field.value) == _old_display_has_address(field.value)
    assert any(_old_display_has_address(v) for v in values) and not all(_old_display_has_address(v) for v in values)


# --- one parse of a header block with and without its blank line --------------------------------

def test_a_header_block_parses_alike_with_its_blank_line_shared():
    """parse_fields of a block ending in a blank line reuses the parse of the block without it
    (a MessageSource head and split_headers' head): the same fields as the full parse, on
    generated blocks of folds, bare LFs, lone CRs, empty lines and junk."""
    rnd = random.Random(7)
    pieces = [b"A: b\r\n", b" c\r\n", b"\tcont\n", b"\r\n", b"\n", b"X-Y : z\r\n", b"junk\r\n", b"\r", b"B:\n", b"",
              b"From: a@b\r\n", b"DKIM-Signature: v=1\r\n", b" \r\n", b"C: d"]
    for _ in range(5000):
        block = b"".join(rnd.choice(pieces) for _ in range(rnd.randrange(0, 9)))
        assert auth_headers.parse_fields(block) == auth_headers._parse_fields(block), block
        assert auth_headers.parse_fields(bytearray(block)) == auth_headers._parse_fields(block), block


def test_a_message_head_and_its_split_head_share_one_parse():
    from mxgate.auth.headers import split_headers

    message = b"From: <a@fabrikam.test>\r\nSubject: shared " + os.urandom(8).hex().encode() + b"\r\n\r\nbody\r\n"
    head = MessageSource.from_bytes(message).split_head(4096).head
    assert head.endswith(b"\r\n\r\n")
    before = auth_headers._parse_fields_memo.cache_info()
    with_blank = auth_headers.parse_fields(head)
    without = auth_headers.parse_fields(split_headers(message)[0])
    after = auth_headers._parse_fields_memo.cache_info()
    assert after.misses - before.misses == 1 and after.hits - before.hits == 1
    assert with_blank[:-1] == without and with_blank[-1] == auth_headers.HeaderField(b"", b"\r\n")


# --- the answer cache keyed by a name's lower-cased labels ---------------------------------------

def test_the_cache_key_of_a_name_is_equal_exactly_when_the_names_are():
    """The resolver's cache key stands for the Name (whose hash dnspython computes in Python):
    two names share a key exactly when dnspython calls them equal — case folded in ASCII only,
    absolute and relative kept apart, escapes and 8-bit labels as they are."""
    import dns.name

    from mxgate.auth import dns as mdns

    rnd = random.Random(11)
    atoms = ["fabrikam", "FABRIKAM", "Fabrikam", "test", "TEST", "_dmarc", "s1", "_domainkey", "xn--bcher-kva",
             "\\065", "A", "a", "\\.", "b\\ c", "\\195\\169", "\\233", "\\201", "9", "in-addr", "arpa", "@", "é", "É"]
    names = []
    for _ in range(400):
        labels = [rnd.choice(atoms) for _ in range(rnd.randrange(1, 4))]
        text = ".".join(labels) + rnd.choice(["", "."])
        try:
            names.append(dns.name.from_text(text, origin=rnd.choice([dns.name.root, None])))
        except (dns.exception.DNSException, UnicodeError, ValueError):
            continue
    assert len(names) > 300
    for a in names[:150]:
        for b in names:
            assert (mdns._labels_key(a) == mdns._labels_key(b)) == (a == b), (a, b)
    for text in ("Fabrikam.Test", "fabrikam.test.", b"S1._DomainKey.fabrikam.test"):
        name, key = mdns._named(text)
        assert name == dns.name.from_text(text if isinstance(text, str) else text.decode()) and key == mdns._labels_key(name)


def test_a_name_asked_in_another_case_or_type_spelling_is_one_cached_answer(dns_server):
    resolver = make_resolver([dns_server.address], timeout=1.0, cache_size=100)
    import dns.name
    import dns.rdatatype

    first = resolver.resolve("fabrikam.test", "TXT")
    asked = len(dns_server.queries)
    for qname, rdtype in (("FABRIKAM.test.", "TXT"), (dns.name.from_text("Fabrikam.Test"), dns.rdatatype.TXT),
                          (b"fabrikam.TEST", 16), ("fabrikam.test", "txt")):
        assert resolver.resolve(qname, rdtype) is first
    assert len(dns_server.queries) == asked
    with pytest.raises(dns.rdatatype.UnknownRdatatype):
        resolver.resolve("fabrikam.test", "NOT-A-TYPE")
    with pytest.raises(dns.rdatatype.UnknownRdatatype):  # an unknown spelling is never remembered
        resolver.resolve("fabrikam.test", "NOT-A-TYPE")
    with pytest.raises(dns.resolver.NoAnswer):  # another type is another question
        resolver.resolve("fabrikam.test", "MX")
    assert len(dns_server.queries) == asked + 1


def test_an_encoded_display_name_holding_an_address_is_seen():
    """Session 10: `=?utf-8?q?paypal=40paypal.com?= <x@evil.test>` shows as paypal@paypal.com;
    encoding the display name must not hide it from FROM_DISPLAY_HAS_ADDRESS."""
    for value in (b"=?utf-8?q?paypal=40paypal.com?= <x@evil.test>", b"=?utf-8?b?cGF5cGFsQHBheXBhbC5jb20=?= <x@evil.test>",
                  b'"=?utf-8?q?PayPal_=3Cservice=40paypal.com=3E?=" <x@evil.test>'):
        assert score._display_has_address(value), value
    assert not score._display_has_address(b"=?utf-8?q?Pay_Pal?= <x@evil.test>")
    assert not score._display_has_address(b"=?utf-8?q?x=40evil.test?= <x@evil.test>")  # its own address
