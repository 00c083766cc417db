"""An Exchange Online tenant as an mxgate policy, to rehearse its lock-down locally (issue 20).

Owns: which parts of the policy come from the tenant (accepted domains, inbound and outbound
connectors — EXO's own objects, already translated by tenant.py) and which are kept from the
policy the tenant is merged into (organisation, gateway checks, mailboxes in domains that remain),
and the postmaster mailbox every authoritative domain gets when it has none (RFC 5321 §4.5.1), so
`mxgate verify` has a recipient that exists. Pure; validation is policy/validate.py's.

Must not know: the store, the CLI, or how files are read.
"""

from __future__ import annotations

from mxgate.exo.tenant import Tenant
from mxgate.policy.model import Mailbox, Organization, Policy
from mxgate.policy.validate import accepted_domain_for


def tenant_policy(tenant: Tenant, base: Policy) -> tuple[Policy, list[str]]:
    """(policy, notes): `base` with the tenant's domains and connectors in place of its own."""
    notes = list(tenant.notes)
    shell = base.replace(accepted_domains=tenant.accepted_domains)
    kept, dropped = [], []
    for m in base.mailboxes:
        addresses = (m.address, *m.aliases)
        in_tenant = all("@" in a and accepted_domain_for(shell, a.rsplit("@", 1)[1]) is not None for a in addresses)
        (kept if in_tenant else dropped).append(m)
    if dropped:
        notes.append(f"{len(dropped)} mailbox(es) outside the tenant's accepted domains left out: "
                     + ", ".join(m.address for m in dropped[:5]) + (" ..." if len(dropped) > 5 else ""))
    have = {m.address.rsplit("@", 1)[1].lower() for m in kept}
    for d in tenant.accepted_domains:
        if d.type == "authoritative" and d.name.lower() not in have:
            kept.append(Mailbox(f"postmaster@{d.name}"))
            notes.append(f"mailbox postmaster@{d.name} added so the domain has a recipient to test with")
    org = base.organization
    if base == Policy() and tenant.default_domain:
        org = Organization(name=tenant.default_domain.split(".")[0].capitalize(),
                           authserv_id=f"mx.{tenant.default_domain}")
    return shell.replace(organization=org, mailboxes=tuple(kept), inbound_connectors=tenant.inbound_connectors,
                         outbound_connectors=tenant.outbound_connectors), notes
