"""Issue 15 (first point): the transaction is one value from MAIL to delivery.

A policy change between RCPT and DATA must not make the mailbox role answer 250, store nothing
and trace "Delivered": the RCPT decisions and the policy snapshot they were made under travel
with the message, so what was accepted is what is delivered, and the trace matches the disk.
Real node, real socket, real TLS; the change goes through the policy store as an admin's would.
"""

from __future__ import annotations

import rig
from rig import GATEWAY, RawSMTP, maildir_messages, simple_message

WITHOUT_ALICE = rig.GUIDE_POLICY.replace(
    '[[mailbox]]\naddress = "alice@contoso.test"\naliases = ["alice.smith@contoso.test"]\n', "")
WITH_ALICE_FORWARDING = rig.GUIDE_POLICY.replace(
    'aliases = ["alice.smith@contoso.test"]\n', 'aliases = ["alice.smith@contoso.test"]\n'
    'forward_to = ["carol@external.test"]\nkeep_copy = false\n')


def _open_transaction(port: int, rcpts: list[str]) -> RawSMTP:
    c = RawSMTP("127.0.0.1", port, GATEWAY)
    assert c.greeting()[0] == 220
    c.cmd("EHLO gw.test")
    assert c.starttls()[0] == 220
    c.cmd("EHLO gw.test")
    assert c.cmd("MAIL FROM:<friend@fabrikam.test>")[0] == 250
    for r in rcpts:
        assert c.cmd(f"RCPT TO:<{r}>")[0] == 250
    return c


def _finish(c: RawSMTP, data: bytes) -> tuple[int, str]:
    assert c.cmd("DATA")[0] == 354
    c.send(data + b".\r\n")
    reply = c.read_reply()
    c.cmd("QUIT")
    c.close()
    return reply


def _change_policy(n, toml_text: str) -> int:
    version = rig.apply_policy(n.home, toml_text, actor="admin")
    # Wait on the node's state, not a clock: the watcher has swapped in the new version.
    assert rig.wait_until(lambda: n.node.watcher.current.version == version, 5), "policy change not seen"
    return version


def _rows(n, recipient: str) -> list[dict]:
    n.trace.flush()
    return [r for r in n.trace.search(recipient=recipient) if r["recipient"] == recipient and r["status"] != "Rejected"]


def test_mailbox_removed_between_rcpt_and_data_is_still_delivered_as_accepted(node_factory):
    n = node_factory()
    c = _open_transaction(n.port(), ["alice@contoso.test"])
    new_version = _change_policy(n, WITHOUT_ALICE)
    assert "alice@contoso.test" not in n.node.watcher.current.directory  # the live policy forgot her

    reply = _finish(c, simple_message(subject="accepted under version 1"))

    assert reply[0] == 250, reply
    stored = maildir_messages(n.home, "alice@contoso.test")
    assert len(stored) == 1 and b"accepted under version 1" in stored[0]  # the 250 is on disk
    rows = _rows(n, "alice@contoso.test")
    assert [(r["status"], r["policy_version"]) for r in rows] == [("Delivered", 1)]  # the snapshot, not the live one
    assert new_version == 2
    # A new transaction sees the new policy: alice is unknown now.
    with RawSMTP("127.0.0.1", n.port(), GATEWAY) as again:
        again.greeting(); again.cmd("EHLO gw.test"); again.starttls(); again.cmd("EHLO gw.test")
        again.cmd("MAIL FROM:<friend@fabrikam.test>")
        assert again.cmd("RCPT TO:<alice@contoso.test>")[0] == 550


def test_alias_routing_uses_the_snapshot_too(node_factory):
    """An alias accepted at RCPT is expanded under the same snapshot: a forward (without a kept
    copy) added later does not take the message already accepted away from her mailbox."""
    n = node_factory()
    c = _open_transaction(n.port(), ["alice.smith@contoso.test", "bob@contoso.test"])
    _change_policy(n, WITH_ALICE_FORWARDING)

    reply = _finish(c, simple_message(subject="two recipients", to="alice.smith@contoso.test"))

    assert reply[0] == 250, reply
    assert len(maildir_messages(n.home, "alice@contoso.test")) == 1
    assert len(maildir_messages(n.home, "bob@contoso.test")) == 1
    assert n.node.internal.outbound.spool.count() == 0  # nothing forwarded under the newer policy
    statuses = {r["recipient"]: (r["status"], r["policy_version"])
                for r in _rows(n, "alice.smith@contoso.test") + _rows(n, "bob@contoso.test")}
    assert statuses == {"alice.smith@contoso.test": ("Delivered", 1), "bob@contoso.test": ("Delivered", 1)}


async def test_an_accepted_recipient_the_router_cannot_place_tempfails_the_whole_message():
    """Defence in depth behind the snapshot: if delivery still finds no mailbox for a recipient
    accepted at RCPT, the client is told to retry (451), never 250 with nothing stored."""
    import ipaddress
    from types import SimpleNamespace

    from mxgate.delivery.internal import Outcome
    from mxgate.delivery.router import DeliveryPlan, Step
    from mxgate.policy.attribution import SessionFacts, attribute_by_ip, compile_policy, decide_rcpt
    from mxgate.policy.document import load_toml
    from mxgate.policy.transaction import AcceptedRecipient, MailTransaction
    from mxgate.server.mailbox import MailboxRole, MessageContext
    from mxgate.smtp.address import parse_address

    compiled = compile_policy(load_toml(rig.GUIDE_POLICY), 1)
    ip = ipaddress.ip_address(GATEWAY)
    facts = SessionFacts(ip, tls=True, ip_connectors=attribute_by_ip(compiled, ip))
    sender, alice = parse_address("friend@fabrikam.test"), parse_address("alice@contoso.test")
    txn = MailTransaction(compiled, sender, (AcceptedRecipient(alice, decide_rcpt(compiled, facts, sender, alice)),))

    class LosingDelivery:
        can_relay = False

        async def deliver_accepted(self, txn, data, *, trace_id, folder, from_ip, original_ip):
            return Outcome(DeliveryPlan((), (), dropped=(Step("alice@contoso.test", "", "unknown"),)))

    role = MailboxRole(SimpleNamespace(hostname="mx.test"), node="n", watcher=None, trace=None, maildir=None,
                       disk_path="/", delivery=LosingDelivery())
    ctx = MessageContext(SimpleNamespace(peer_ip=ip, peer_text=str(ip)), txn, b"Subject: x\r\n\r\nbody\r\n", "t1")
    verdict = await role._deliver_local(ctx, ctx.data)
    assert (verdict.action.value, verdict.reason) == ("tempfail", "recipient-not-deliverable")
    from mxgate.smtp.replies import reply_for

    assert reply_for(verdict).code == 451
