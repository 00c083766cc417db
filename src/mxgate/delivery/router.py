"""The internal router: where one message for some recipients really goes. Pure.

Owns: expanding recipients through the directory — aliases to their mailbox, distribution
lists (a mailbox entry with `members`) to their members, per-mailbox forwarding (`forward_to`,
with `keep_copy`) — into a `DeliveryPlan` of local mailboxes to write and external addresses to
hand to the outbound path, with loop protection: a mailbox or list is expanded once per message,
nesting is bounded, and addresses the message was already delivered to (its `Delivered-To`
header fields, RFC 9228) are never forwarded to again. Must not know Maildir, queues or SMTP:
delivery/internal.py acts on the plan.

Why inside the process: mail the organisation generates (forwards, list copies) must never
re-enter the anonymous listener, where it would look like a bypass attempt (mail-flow.md §5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from mxgate.policy.model import Mailbox

MAX_EXPANSION_DEPTH = 8  # nested lists/forwards deeper than this are a configuration loop
MAX_EXPANDED_RECIPIENTS = 1000  # one message must not fan out without bound


@dataclass(frozen=True)
class Step:
    """One line of the expansion, for the message trace (event `Expand`)."""

    address: str
    target: str
    why: str  # "alias", "member", "forward", "keep-copy", "loop", "unknown", "depth", "limit"


@dataclass(frozen=True)
class DeliveryPlan:
    local: tuple[str, ...]  # mailbox addresses to write, each once
    external: tuple[str, ...]  # addresses outside the organisation (the outbound path)
    forwarded_by: Mapping[str, str] = field(default_factory=dict)  # external address → forwarding mailbox or list
    steps: tuple[Step, ...] = ()
    dropped: tuple[Step, ...] = ()  # loops, unknown addresses: nothing delivered for these

    @property
    def empty(self) -> bool:
        return not self.local and not self.external


def plain_plan(recipients: Iterable[str], directory: Mapping[str, Mailbox]) -> DeliveryPlan | None:
    """The plan `expand` gives when every recipient is a mailbox under its own address — no alias
    spelling, no list, no forwarding: its local copies, each once, in order. That plan does not
    depend on the message (Delivered-To, hop count), so the caller need not read its header
    (issue 19: the router and those reads were ~3% of the mailbox's CPU per message in bench P1).
    None when any recipient needs `expand`."""
    local: dict[str, None] = {}
    for r in recipients:
        address = r.strip().lower()
        mailbox = directory.get(address)
        if mailbox is None or mailbox.members or mailbox.forward_to or mailbox.address.lower() != address:
            return None
        local[address] = None
    return DeliveryPlan(tuple(local), ())


def expand(recipients: Iterable[str], directory: Mapping[str, Mailbox], is_local_domain: Callable[[str], bool],
           *, seen: Iterable[str] = (), hops: int = 0, max_hops: int = 30) -> DeliveryPlan:
    """Resolve `recipients` (envelope addresses) into local mailboxes and external addresses.

    `directory` maps every address and alias (lower case) to its Mailbox; `is_local_domain`
    says whether a domain is one of ours (an unknown address there is dropped, never sent out);
    `seen` are addresses the message already passed through (`Delivered-To`); `hops` its
    Received count: at `max_hops` forwarding stops (RFC 5321 §6.3) and only local copies remain.
    """
    seen_set = {s.lower() for s in seen}
    local: list[str] = []
    external: list[str] = []
    forwarded_by: dict[str, str] = {}
    steps: list[Step] = []
    dropped: list[Step] = []
    expanded: set[str] = set()  # mailbox/list addresses already expanded for this message
    may_forward = hops < max_hops

    def add_local(address: str) -> None:
        if address not in local:
            local.append(address)

    def add_external(address: str, via: str | None) -> None:
        if address in external:
            return
        if len(local) + len(external) >= MAX_EXPANDED_RECIPIENTS:
            dropped.append(Step(address, "", "limit"))
            return
        external.append(address)
        if via:
            forwarded_by[address] = via

    def visit(address: str, depth: int, via: str | None, path: frozenset[str] = frozenset()) -> None:
        address = address.strip().lower()
        mailbox = directory.get(address)
        if mailbox is None:
            domain = address.rpartition("@")[2]
            if is_local_domain(domain):
                dropped.append(Step(address, "", "unknown"))
            else:
                add_external(address, via)
            return
        canonical = mailbox.address.lower()
        if canonical != address:
            steps.append(Step(address, canonical, "alias"))
        if canonical in path:  # a forwarding or list cycle: the copy stays where the cycle closes
            dropped.append(Step(canonical, canonical, "loop"))
            if not mailbox.members:
                add_local(canonical)
            return
        if canonical in expanded:
            return  # reached twice (a list member who is also a direct recipient): one copy
        expanded.add(canonical)
        path = path | {canonical}
        if depth >= MAX_EXPANSION_DEPTH:
            dropped.append(Step(canonical, "", "depth"))
            if not mailbox.members:
                add_local(canonical)
            return
        if mailbox.members:
            for member in mailbox.members:
                steps.append(Step(canonical, member.lower(), "member"))
                # The list re-sends the message: an external member's copy leaves as the list's
                # forward (SRS envelope, Delivered-To), or SPF fails at the member's server.
                visit(member, depth + 1, canonical, path)
            return
        targets = [t.lower() for t in mailbox.forward_to] if may_forward else []
        live = []
        for t in targets:
            if t in seen_set or t == canonical:
                dropped.append(Step(canonical, t, "loop"))
            else:
                live.append(t)
        if mailbox.keep_copy or not live:  # never lose mail: no live target means keep it here
            add_local(canonical)
            if live:
                steps.append(Step(canonical, canonical, "keep-copy"))
        for t in live:
            steps.append(Step(canonical, t, "forward"))
            visit(t, depth + 1, canonical, path)

    for r in recipients:
        visit(r, 0, None)
    return DeliveryPlan(tuple(local), tuple(external), forwarded_by, tuple(steps), tuple(dropped))


def delivered_to(headers: bytes) -> tuple[str, ...]:
    """Addresses in the message's `Delivered-To:` fields (RFC 9228), lower case."""
    out = []
    for line in headers.split(b"\r\n"):
        if line[:13].lower() == b"delivered-to:":
            out.append(line[13:].strip().decode("utf-8", "replace").strip("<>").lower())
    return tuple(a for a in out if a)
