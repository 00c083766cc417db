"""One accepted mail transaction as decided at MAIL and RCPT: the value delivery acts on. Pure.

Owns: `MailTransaction` — the envelope sender, each accepted recipient with the `RcptDecision`
made for it (route, mailbox, connector, SRS target), and the `CompiledPolicy` snapshot those
decisions were made under. The mailbox role builds it once when DATA ends and hands the same
value to authentication, routing, quarantine, delivery and the trace, so nothing downstream
looks a recipient up again in a newer policy: a change between RCPT and DATA once made the role
answer 250, store nothing and trace "Delivered" (issue 15).
Must not know: sessions, sockets, Maildir or queues.
"""

from __future__ import annotations

from dataclasses import dataclass

from mxgate.policy.attribution import CompiledPolicy, RcptDecision
from mxgate.policy.model import InboundConnector
from mxgate.smtp.address import Address
from mxgate.verdict import RcptRoute



@dataclass(frozen=True)
class AcceptedRecipient:
    address: Address  # as given in RCPT TO
    decision: RcptDecision  # accepted, under MailTransaction.policy


@dataclass(frozen=True)
class MailTransaction:
    policy: CompiledPolicy  # the snapshot seen at MAIL FROM; every decision below was made under it
    sender: Address
    recipients: tuple[AcceptedRecipient, ...]

    @property
    def connector_name(self) -> str:
        """The connector the message is attributed to ("" = anonymous); one per transaction
        (mail-flow.md §3.6: recipients with another outcome were deferred at RCPT)."""
        return self.recipients[0].decision.connector if self.recipients else ""

    @property
    def connector(self) -> InboundConnector | None:
        name = self.connector_name
        return self.policy.inbound(name) if name else None

    @property
    def local(self) -> tuple[AcceptedRecipient, ...]:
        return tuple(r for r in self.recipients if r.decision.route is RcptRoute.LOCAL)

    @property
    def relayed(self) -> tuple[AcceptedRecipient, ...]:
        return tuple(r for r in self.recipients if r.decision.route is RcptRoute.RELAY)

    @property
    def mailboxes(self) -> tuple[str, ...]:
        """The mailbox each local recipient was resolved to at RCPT (aliases already followed)."""
        return tuple(r.decision.mailbox.address for r in self.local if r.decision.mailbox is not None)

    @property
    def relay_targets(self) -> tuple[str, ...]:
        """Where each relayed recipient goes: the SRS-reversed address when there is one."""
        return tuple(r.decision.target or str(r.address) for r in self.relayed)
