"""Shortcuts on the mailbox's event loop (issue 19, bench P1, session 4): each answers exactly what
the longer way answers — differential tests against the long way on generated input — and none
lets a sender keep a forged header, skip a check, or reach another session's or policy's state."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings, strategies as st

import rig
from mxgate.auth.headers import _sanitized_fields, _split, sanitize_inbound_headers
from mxgate.auth.pipeline import Authenticator
from mxgate.auth.received import received_values
from mxgate.auth.skiplist import SkipListSettings, find_original_sender
from mxgate.policy.attribution import compile_policy
from mxgate.policy.document import load_toml
from mxgate.policy.model import InboundConnector
from mxgate.smtp import message as msg

# --- header hygiene: a message with no X-MXGate-* and no Authentication-Results comes back as is --

_NAMES = [b"Subject", b"From", b"Received", b"X-MXGate-Spam-Verdict", b"x-mxgate-checks", b"X-MXGATE-SPAM-SCORE",
          b"Authentication-Results", b"AUTHENTICATION-RESULTS", b"Authentication-Results ", b"X-Authentication-Results",
          b"ARC-Authentication-Results", b"X-MXGateway", b"Authentication-Results-Original", b"DKIM-Signature"]
_VALUES = [b" mx.contoso.test; dmarc=pass", b" (comment) mx.contoso.test.; spf=pass", b" other.example; dkim=pass",
           b" x-mxgate-spam-verdict: ham", b" plain", b"", b" \xff\xfe junk", b" a\r\n\tfolded authentication-results"]
_EOLS = [b"\r\n", b"\n"]


@st.composite
def _messages(draw) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        lines.append(draw(st.sampled_from(_NAMES)) + b":" + draw(st.sampled_from(_VALUES)) + draw(st.sampled_from(_EOLS)))
        if draw(st.booleans()):
            lines.append(b"\t" + draw(st.sampled_from(_VALUES)).strip() + draw(st.sampled_from(_EOLS)))
    if draw(st.booleans()):
        lines.append(draw(st.sampled_from([b"not a field\r\n", b" leading fold\n", b"\r\n"])))
    body = draw(st.sampled_from([b"", b"\r\nbody\r\n", b"\nbody with X-MXGate-Spam-Verdict: spam\n",
                                 b"\r\nAuthentication-Results: mx.contoso.test; dmarc=pass\r\n"]))
    return b"".join(lines) + body


@settings(max_examples=600, deadline=None)
@given(_messages(), st.sampled_from(["mx.contoso.test", "MX.Contoso.Test.", "other.example"]),
       st.sampled_from([(), (b"x-mxgate-spam-verdict", b"x-mxgate-checks")]))
def test_sanitize_answers_what_the_field_walk_answers(message, authserv_id, keep):
    head, sep, body = _split(message)
    assert sanitize_inbound_headers(message, authserv_id, keep) == _sanitized_fields(head, authserv_id, keep) + sep + body


def test_forged_stamps_and_our_own_results_are_still_removed_whatever_their_case():
    forged = (b"Subject: hi\r\nX-MXGATE-Spam-Verdict: ham\r\nauthentication-RESULTS: mx.contoso.test; dmarc=pass\r\n"
              b"Authentication-Results: upstream.example; spf=fail\r\n\r\nbody\r\n")
    clean = sanitize_inbound_headers(forged, "mx.contoso.test")
    assert clean == (b"Subject: hi\r\nAuthentication-Results-Original: upstream.example; spf=fail\r\n\r\nbody\r\n")


def test_a_message_without_trust_headers_is_returned_unchanged_and_not_copied():
    message = b"Subject: hi\r\nReceived: from a by b; x\r\n\r\nx-mxgate-spam-verdict: only in the body\r\n"
    assert sanitize_inbound_headers(message, "mx.contoso.test") is message


# --- the skip-list walk: no header is parsed when the connector has no skip list ----------------

def _connector(**kw) -> InboundConnector:
    return InboundConnector(name="Partner", sender_ip_addresses=("127.0.0.10",), **kw)


_RECEIVED = [b"Received: from relay.example ([203.0.113.5]) by gw.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n",
             b"Received: from internal ([10.1.2.3])\r\n\tby gw.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n",
             b"RECEIVED : from x (x [198.51.100.7]) by y\r\n", b"Received: garbage (((\r\n", b"Subject: s\r\n"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_RECEIVED), max_size=6), st.sampled_from(["127.0.0.10", "192.0.2.10"]),
       st.sampled_from([{}, {"ef_skip_last_ip": True}, {"ef_skip_ips": ("127.0.0.0/8", "203.0.113.0/24")},
                        {"ef_skip_ips": ("192.0.2.0/24",), "ef_users": ("alice@contoso.test",)}]))
def test_walk_answers_what_the_full_walk_answers(received, connecting_ip, ef):
    auth = Authenticator(servers=["127.0.0.1:9"], timeout=1.0, non_routable=["10.0.0.0/8"])
    connector = _connector(**ef)
    data = b"".join(received) + b"\r\nbody\r\n"
    walk, in_scope = auth.walk(data, connecting_ip, connector, ["alice@contoso.test"])
    settings_ = SkipListSettings(connector.ef_skip_last_ip, connector.ef_skip_ips, auth.non_routable)
    assert walk == find_original_sender(received_values(msg.header_block(data)), connecting_ip, settings_)
    assert in_scope


def test_a_skip_list_still_reads_the_received_headers():
    auth = Authenticator(servers=["127.0.0.1:9"], timeout=1.0, non_routable=[])
    data = _RECEIVED[0] + b"\r\nbody\r\n"
    walk, _ = auth.walk(data, "127.0.0.10", _connector(ef_skip_last_ip=True), ["alice@contoso.test"])
    assert (walk.status, str(walk.original_ip)) == ("detected", "203.0.113.5")
    off, _ = auth.walk(data, "127.0.0.10", _connector(), ["alice@contoso.test"])
    assert (off.status, off.rule, off.original_ip) == ("off", "disabled", None)


# --- the connector a transaction names: looked up once per policy snapshot ----------------------

_TWO_CONNECTORS = rig.GUIDE_POLICY + """
[[inbound_connector]]
name = "Old Partner"
type = "partner"
enabled = false
sender_domains = ["old.example"]
sender_ip_addresses = ["192.0.2.0/24"]
"""


def test_the_remembered_connector_is_policy_inbounds_answer_for_every_name():
    policy = load_toml(_TWO_CONNECTORS)
    compiled = compile_policy(policy, 3)
    names = ["Third-party filter service", "third-party filter service", "THIRD-PARTY FILTER SERVICE",
             "Old Partner", "old partner", "nobody", ""]
    for _ in range(2):  # the second round answers from the memo
        for name in names:
            assert compiled.inbound(name) is policy.inbound(name), name


def test_each_policy_snapshot_answers_with_its_own_connector():
    """A memo on one snapshot never answers for another: a changed connector is seen at once."""
    old = compile_policy(load_toml(rig.GUIDE_POLICY), 1)
    assert old.inbound("Third-party filter service").require_tls
    changed = old.policy.replace(inbound_connectors=tuple(
        replace(c, require_tls=False) for c in old.policy.inbound_connectors))
    new = compile_policy(changed, 2)
    assert new.inbound("Third-party filter service").require_tls is False
    assert old.inbound("Third-party filter service").require_tls is True


# --- MAIL and RCPT decisions remembered per session ----------------------------------------------

import ipaddress  # noqa: E402
import random  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import mxgate.server.mailbox as mailbox_mod  # noqa: E402
from mxgate.server.mailbox import MailboxRole  # noqa: E402
from mxgate.smtp.address import parse_path  # noqa: E402

_GUIDE = compile_policy(load_toml(rig.GUIDE_POLICY), 1)
# The next version: the gateway's address no longer attributes the session (a policy change).
_MOVED = compile_policy(_GUIDE.policy.replace(inbound_connectors=tuple(
    replace(c, sender_ip_addresses=("127.0.0.11",)) for c in _GUIDE.policy.inbound_connectors)), 2)
# And one that lets clear text in (require_tls off).
_CLEAR = compile_policy(_GUIDE.policy.replace(inbound_connectors=tuple(
    replace(c, require_tls=False) for c in _GUIDE.policy.inbound_connectors)), 3)
_SENDERS = ["<friend@fabrikam.test>", "<someone@contoso.test>", "<>", "<x@[192.0.2.1]>"]
_RCPTS = ["<alice@contoso.test>", "<Alice.Smith@contoso.test>", "<bob@contoso.test>", "<nobody@contoso.test>",
          "<out@elsewhere.example>", "<postmaster>"]


def _role(current) -> MailboxRole:
    return MailboxRole(SimpleNamespace(hostname="mx.test", reject_stage="rcpt"), node="n",
                       watcher=SimpleNamespace(current=current), trace=None, maildir=None, disk_path="/")


def _session(role, ip: str):
    s = SimpleNamespace(peer_ip=ipaddress.ip_address(ip), peer_text=ip, role_state={}, txn=None, tls=None)
    role.on_connect(s)
    return s


def _answers(seed: int) -> list:
    """One random run of policy changes, STARTTLS, MAIL and RCPT on two sessions (the gateway's and
    an attacker's), every answer the role gave, as comparable values."""
    rng = random.Random(seed)
    role = _role(_GUIDE)
    sessions = [_session(role, "127.0.0.10"), _session(role, "127.0.0.66"), _session(role, "127.0.0.11")]
    out = []
    for _ in range(120):
        s = rng.choice(sessions)
        op = rng.random()
        if op < 0.05:
            role.watcher.current = rng.choice([_GUIDE, _MOVED, _CLEAR])
        elif op < 0.1:
            s.tls = SimpleNamespace(peer_cert=None, version="TLSv1.3")
            role.on_tls(s)
        elif op < 0.4 or s.txn is None:
            sender = parse_path(rng.choice(_SENDERS), allow_null=True)
            verdict = role.on_mail(s, sender, {})
            s.txn = SimpleNamespace(sender=sender) if not verdict.refused else None
            out.append(("mail", verdict.action, verdict.reason, verdict.detail))
        else:
            verdict, decision = role.on_rcpt(s, parse_path(rng.choice(_RCPTS), allow_null=False))
            out.append(("rcpt", verdict.action, verdict.reason, verdict.detail, decision))
    return out


def test_remembered_decisions_are_the_decisions(monkeypatch):
    """The same runs with the memo and without it (a memo of size 0 starts over at every question)."""
    remembered = [_answers(seed) for seed in range(40)]
    monkeypatch.setattr(mailbox_mod, "DECISIONS_KEPT", 0)
    assert [_answers(seed) for seed in range(40)] == remembered
    assert any(a[0] == "rcpt" and a[2] == "recipient-ok" for run in remembered for a in run)
    assert any(a[0] == "rcpt" and a[2] == "connector-attribution" for run in remembered for a in run)


def test_an_attacker_session_is_refused_after_the_gateway_session_was_accepted():
    role = _role(_GUIDE)
    gateway, attacker = _session(role, "127.0.0.10"), _session(role, "127.0.0.66")
    sender, alice = parse_path("<friend@fabrikam.test>", allow_null=True), parse_path("<alice@contoso.test>", allow_null=False)
    for s in (gateway, attacker):
        s.tls = SimpleNamespace(peer_cert=None, version="TLSv1.3")
        role.on_tls(s)
    for _ in range(3):  # the gateway's answers are remembered in its session
        assert not role.on_mail(gateway, sender, {}).refused
        gateway.txn = SimpleNamespace(sender=sender)
        assert role.on_rcpt(gateway, alice)[0].reason == "recipient-ok"
    assert not role.on_mail(attacker, sender, {}).refused
    attacker.txn = SimpleNamespace(sender=sender)
    assert role.on_rcpt(attacker, alice)[0].reason == "connector-attribution"


def test_a_policy_change_reaches_a_session_that_remembered_decisions():
    role = _role(_GUIDE)
    gateway = _session(role, "127.0.0.10")
    gateway.tls = SimpleNamespace(peer_cert=None, version="TLSv1.3")
    role.on_tls(gateway)
    sender, alice = parse_path("<friend@fabrikam.test>", allow_null=True), parse_path("<alice@contoso.test>", allow_null=False)
    role.on_mail(gateway, sender, {})
    gateway.txn = SimpleNamespace(sender=sender)
    assert role.on_rcpt(gateway, alice)[0].reason == "recipient-ok"
    role.watcher.current = _MOVED  # the gateway's address left the connector
    role.on_mail(gateway, sender, {})
    assert role.on_rcpt(gateway, alice)[0].reason == "connector-attribution"


def test_tls_required_is_asked_again_after_starttls():
    role = _role(_GUIDE)
    s = _session(role, "127.0.0.10")
    sender = parse_path("<friend@fabrikam.test>", allow_null=True)
    assert role.on_mail(s, sender, {}).reason == "tls-required"
    s.tls = SimpleNamespace(peer_cert=None, version="TLSv1.3")
    role.on_tls(s)
    assert role.on_mail(s, sender, {}).reason == "sender-ok"


# --- our Received field: the session's part composed once -----------------------------------------

def _received_as_before(*, helo, peer_ip, by, protocol, trace_id, recipient, tls="", connector="", now=None) -> bytes:
    """The composition before the per-session part was remembered (the reference)."""
    ip_literal = f"IPv6:{peer_ip}" if ":" in peer_ip else peer_ip
    parts = [f"from {msg.safe_token(helo or 'unknown')} ([{ip_literal}])"]
    if tls:
        parts.append(f"({tls})")
    parts.append(f"by {by} (mxgate)")
    if connector:
        parts.append(f"(connector {msg.safe_token(connector.replace(' ', '_'), 64)})")
    parts.append(f"with {protocol} id {trace_id}")
    if recipient:
        parts.append(f"for <{recipient}>")
    value = "\r\n\t".join(parts) + "; " + msg._date(int(now or 0))
    return b"Received: " + value.encode("utf-8", "replace") + b"\r\n"


@settings(max_examples=400, deadline=None)
@given(helo=st.sampled_from(["gw.test", "", "evil\r\nX-MXGate-Spam-Verdict: ham", "ünï.example", "a b(c)"]),
       peer_ip=st.sampled_from(["127.0.0.10", "2001:db8::1"]),
       tls=st.sampled_from(["", "using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384"]),
       connector=st.sampled_from(["", "Third-party filter service", "x\ny"]),
       protocol=st.sampled_from(["ESMTPS", "ESMTPSA", "SMTP"]), trace_id=st.text("0123456789abcdef", min_size=1, max_size=16),
       recipient=st.sampled_from([None, "", "alice@contoso.test", "jörg@münchen.example", "\udcff@x"]),
       now=st.integers(1_700_000_000, 1_900_000_000))
def test_received_header_is_composed_as_before(helo, peer_ip, tls, connector, protocol, trace_id, recipient, now):
    kw = dict(helo=helo, peer_ip=peer_ip, by="mx.contoso.test", protocol=protocol, trace_id=trace_id,
              recipient=recipient, tls=tls, connector=connector, now=now)
    assert msg.received_header(**kw) == _received_as_before(**kw)


# --- Maildir file paths joined without re-parsing --------------------------------------------------

from pathlib import Path  # noqa: E402

import mxgate.delivery.maildir as maildir_mod  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(host=st.text(min_size=1, max_size=30).filter(lambda h: "\x00" not in h),
       address=st.sampled_from(["alice@contoso.test", "Bob.O'Neil@contoso.test", "x/../y@contoso.test", "..@c.test"]),
       folder=st.sampled_from([None, "Junk", "a/b"]))
def test_maildir_paths_are_the_joined_paths(tmp_path_factory, host, address, folder):
    root = Path("/srv/mail") / "maildir"
    box = maildir_mod.Maildir(root, committer=None, hostname=host)
    try:
        directory = box.path_for(address, folder)
    except maildir_mod.InvalidMailboxError:
        return
    job = box._job(directory, b"x" * 7)
    name = box.new_name(7)
    for sub, path in (("tmp", job.tmp_path), ("new", job.final_path)):
        joined = directory / sub / path.name
        assert (path, str(path), path.parts, hash(path)) == (joined, str(joined), joined.parts, hash(joined))
        assert path.parent == directory / sub and path.name.endswith(",S=7")
    assert maildir_mod._child(directory, name) == directory / name


def test_maildir_paths_without_the_shortcut_are_the_same(monkeypatch):
    box = maildir_mod.Maildir(Path("/srv/mail"), committer=None, hostname="mx.test")
    monkeypatch.setattr(box, "new_name", lambda size: f"1764656000.M000001P1Q1.mx.test,S={size}")
    directory = box.path_for("alice@contoso.test")
    fast = box._job(directory, b"abc")
    monkeypatch.setattr(maildir_mod, "_child_relpath", None)  # an interpreter without pathlib's helper
    slow = box._job(directory, b"abc")
    assert (fast.tmp_path, fast.final_path) == (slow.tmp_path, slow.final_path)
    assert str(slow.final_path) == "/srv/mail/alice@contoso.test/new/1764656000.M000001P1Q1.mx.test,S=3"
