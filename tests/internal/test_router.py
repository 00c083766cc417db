"""Pure tests of the internal router (aliases, lists, forwarding, loops) and of SRS."""

from __future__ import annotations

import pytest

from mxgate.delivery import srs
from mxgate.delivery.router import MAX_EXPANSION_DEPTH, delivered_to, expand
from mxgate.policy.model import Mailbox

OURS = {"contoso.test"}


def directory(*boxes: Mailbox) -> dict[str, Mailbox]:
    d = {}
    for m in boxes:
        for a in (m.address, *m.aliases):
            d[a.lower()] = m
    return d


def plan(boxes, rcpts, **kw):
    return expand(rcpts, directory(*boxes), lambda dom: dom in OURS, **kw)


def test_alias_resolves_to_the_mailbox_once():
    p = plan([Mailbox("alice@contoso.test", aliases=("a.smith@contoso.test",))],
             ["a.smith@contoso.test", "ALICE@contoso.test"])
    assert p.local == ("alice@contoso.test",) and p.external == ()
    assert any(s.why == "alias" for s in p.steps)


def test_forward_with_and_without_keep_copy():
    fwd = Mailbox("alice@contoso.test", forward_to=("bob@contoso.test", "carol@ext.test"), keep_copy=True)
    p = plan([fwd, Mailbox("bob@contoso.test")], ["alice@contoso.test"])
    assert p.local == ("alice@contoso.test", "bob@contoso.test")
    assert p.external == ("carol@ext.test",) and p.forwarded_by == {"carol@ext.test": "alice@contoso.test"}
    nocopy = Mailbox("alice@contoso.test", forward_to=("bob@contoso.test",), keep_copy=False)
    assert plan([nocopy, Mailbox("bob@contoso.test")], ["alice@contoso.test"]).local == ("bob@contoso.test",)


def test_distribution_list_expands_members_and_nested_lists():
    boxes = [Mailbox("all@contoso.test", members=("team@contoso.test", "bob@contoso.test", "x@ext.test")),
             Mailbox("team@contoso.test", members=("alice@contoso.test", "bob@contoso.test")),
             Mailbox("alice@contoso.test"), Mailbox("bob@contoso.test")]
    p = plan(boxes, ["all@contoso.test", "bob@contoso.test"])
    assert sorted(p.local) == ["alice@contoso.test", "bob@contoso.test"]  # the lists themselves get no copy
    # An external member gets the list's SRS envelope and Delivered-To, as a forward does (SPF holds there).
    assert p.external == ("x@ext.test",) and p.forwarded_by == {"x@ext.test": "all@contoso.test"}


def test_forwarding_loop_between_mailboxes_terminates_with_copies():
    boxes = [Mailbox("a@contoso.test", forward_to=("b@contoso.test",), keep_copy=False),
             Mailbox("b@contoso.test", forward_to=("a@contoso.test",), keep_copy=False)]
    p = plan(boxes, ["a@contoso.test"])
    assert p.local == ("a@contoso.test",), "a loop must never lose the message: it stays where the cycle closes"
    assert [d.why for d in p.dropped] == ["loop"]


def test_list_containing_itself_and_deep_nesting_are_bounded():
    boxes = [Mailbox("l@contoso.test", members=("l@contoso.test", "bob@contoso.test")), Mailbox("bob@contoso.test")]
    p = plan(boxes, ["l@contoso.test"])
    assert p.local == ("bob@contoso.test",) and [d.why for d in p.dropped] == ["loop"]
    chain = [Mailbox(f"l{i}@contoso.test", members=(f"l{i + 1}@contoso.test",)) for i in range(MAX_EXPANSION_DEPTH + 3)]
    chain.append(Mailbox(f"l{MAX_EXPANSION_DEPTH + 3}@contoso.test"))
    p = plan(chain, ["l0@contoso.test"])
    assert any(d.why == "depth" for d in p.dropped)


def test_seen_addresses_and_hop_count_stop_forwarding_but_keep_the_copy():
    fwd = Mailbox("alice@contoso.test", forward_to=("carol@ext.test",), keep_copy=False)
    p = plan([fwd], ["alice@contoso.test"], seen=["carol@ext.test"])
    assert p.local == ("alice@contoso.test",) and p.external == ()
    assert [d.why for d in p.dropped] == ["loop"]
    p = plan([fwd], ["alice@contoso.test"], hops=30, max_hops=30)
    assert p.local == ("alice@contoso.test",) and p.external == ()


def test_unknown_address_in_our_domain_is_dropped_not_sent_out():
    p = plan([Mailbox("alice@contoso.test", forward_to=("gone@contoso.test",), keep_copy=False)], ["alice@contoso.test"])
    assert p.external == () and [d.why for d in p.dropped] == ["unknown"]


def test_delivered_to_fields_are_read():
    assert delivered_to(b"Delivered-To: Alice@Contoso.test\r\nSubject: x\r\ndelivered-to: <b@x.test>\r\n\r\n") == (
        "alice@contoso.test", "b@x.test")


# --- SRS -----------------------------------------------------------------------------------

SECRET = b"s" * 32
NOW = 1_800_000_000.0


def test_srs_round_trip_and_forgery_and_expiry():
    r = srs.forward("organizer@fabrikam.test", "contoso.test", SECRET, NOW)
    assert r.rewritten and r.address.startswith("SRS0=") and r.address.endswith("@contoso.test")
    assert "=fabrikam.test=organizer@" in r.address
    assert srs.reverse(r.address, SECRET, NOW + 86400) == "organizer@fabrikam.test"
    assert srs.reverse(r.address.upper().replace("@CONTOSO.TEST", "@contoso.test"), SECRET, NOW).lower() == "organizer@fabrikam.test"
    forged = "SRS0=AAAA=" + r.address.split("=", 2)[2]
    with pytest.raises(srs.SrsError):
        srs.reverse(forged, SECRET, NOW)
    with pytest.raises(srs.SrsError):
        srs.reverse(r.address, b"other" * 8, NOW)
    with pytest.raises(srs.SrsError):
        srs.reverse(r.address, SECRET, NOW + 86400 * (srs.MAX_AGE_DAYS + 2))


def test_srs_leaves_bounces_and_our_own_senders_alone_and_nests_as_srs1():
    assert srs.forward("", "contoso.test", SECRET, NOW).address == ""
    assert not srs.forward("bob@contoso.test", "contoso.test", SECRET, NOW).rewritten
    first = srs.forward("o@fabrikam.test", "relay.test", SECRET, NOW).address
    second = srs.forward(first, "contoso.test", SECRET, NOW).address
    assert second.startswith("SRS1=") and "=relay.test==" in second and second.endswith("@contoso.test")
    third = srs.forward(second, "other.test", SECRET, NOW).address
    assert third.startswith("SRS1=") and third.count("==") == 1  # does not grow without bound


# plain_plan (issue 19) answers without reading the message only when every recipient is a plain
# mailbox; whenever it answers, its plan must be exactly expand's, whatever the message says.
from hypothesis import given, settings, strategies as st  # noqa: E402

from mxgate.delivery.router import plain_plan  # noqa: E402

_ADDRS = ["alice@contoso.test", "bob@contoso.test", "list@contoso.test", "carol@ext.test", "nobody@contoso.test"]


@st.composite
def _directories(draw):
    boxes = []
    for address in _ADDRS[:3]:
        if not draw(st.booleans()):
            continue
        spelled = draw(st.sampled_from([address, address.upper(), address.capitalize()]))
        boxes.append(Mailbox(spelled, aliases=tuple(draw(st.lists(st.sampled_from(["a.s@contoso.test", "b@contoso.test"]),
                                                                   max_size=1, unique=True))),
                             forward_to=tuple(draw(st.lists(st.sampled_from(_ADDRS), max_size=2, unique=True))),
                             keep_copy=draw(st.booleans()),
                             members=tuple(draw(st.lists(st.sampled_from(_ADDRS), max_size=2, unique=True)))))
    return boxes


@settings(max_examples=400, deadline=None)
@given(_directories(), st.lists(st.sampled_from(_ADDRS + ["ALICE@contoso.test", " bob@contoso.test ", "a.s@contoso.test"]),
                                max_size=4),
       st.lists(st.sampled_from(_ADDRS), max_size=2), st.integers(0, 40))
def test_plain_plan_is_expands_plan(boxes, rcpts, seen, hops):
    d = directory(*boxes)
    plain = plain_plan(rcpts, d)
    if plain is not None:
        assert plain == expand(rcpts, d, lambda dom: dom in OURS, seen=seen, hops=hops)


def test_plain_plan_answers_for_plain_mailboxes_only():
    d = directory(Mailbox("alice@contoso.test"), Mailbox("bob@contoso.test"),
                  Mailbox("fwd@contoso.test", forward_to=("carol@ext.test",)),
                  Mailbox("list@contoso.test", members=("alice@contoso.test",)),
                  Mailbox("Dave@contoso.test", aliases=("d@contoso.test",)))
    assert plain_plan(["Alice@contoso.test", "bob@contoso.test", "alice@contoso.test"], d).local == (
        "alice@contoso.test", "bob@contoso.test")
    assert plain_plan([], d) == expand([], d, lambda dom: dom in OURS)
    for needs_expand in (["fwd@contoso.test"], ["list@contoso.test"], ["d@contoso.test"], ["carol@ext.test"],
                         ["nobody@contoso.test"], ["alice@contoso.test", "fwd@contoso.test"]):
        assert plain_plan(needs_expand, d) is None
