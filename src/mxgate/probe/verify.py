"""`mxgate verify`: the guide's last step as a matrix of probes (mail-flow.md §7).

Owns: which rows the policy implies (`plan_matrix`, pure), what each row expects and whether a
probe result meets it (`judge_row`, pure), running the rows (`run_matrix`), and the pass/fail
table and JSON. For every partner connector that names its senders (a disabled one gets only its bypass rows,
which fail unless something else refuses; the attacker sources are chosen outside every connector):
- bypass: mail for the connector's domains from a source that is not the connector's must be
  refused by RCPT at the latest (any 5xx: mxgate's 550 5.7.51, or another server's own code);
- gateway: from an address the connector lists (and with its certificate) it is accepted
  (stopping after RCPT unless `send`);
- cleartext: where TLS is required, MAIL in clear text is refused with 530;
- no-cert / wrong-cert on certificate connectors: refused (a failed TLS handshake counts);
- the same over IPv6 when a v6 target is given: accepted from ::1 when the connector lists it,
  refused otherwise.

Must not know: SMTP details (client.py does the talking) or command-line parsing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, replace
from typing import Any, Sequence

from mxgate.names import normalize_domain
from mxgate.policy.ipset import parse_network
from mxgate.policy.model import InboundConnector, Policy
from mxgate.probe.client import ProbeOptions, ProbeResult, run_probe
from mxgate.probe.expect import STAGES, describe

# Verification runs a handful of probes; a few at a time keeps per-IP connection limits happy.
CONCURRENCY = 4
VERIFY_LOCAL = "mxgate-verify"


@dataclass(frozen=True)
class Target:
    host: str
    port: int


@dataclass(frozen=True)
class VerifySettings:
    target: Target
    target6: Target | None = None
    attacker: str = ""  # "" = the first of ATTACKERS outside every connector
    attacker6: str = ""
    ca_file: str | None = None
    tls_servername: str | None = None
    client_cert: str | None = None  # the certificate connectors' real certificate
    client_key: str | None = None
    wrong_cert: str | None = None  # a certificate the server must refuse
    wrong_key: str | None = None
    send: bool = False
    timeout: float = 10.0


@dataclass(frozen=True)
class Row:
    name: str  # stable and unique: "bypass 'Third-party filter service' from 127.0.0.66"
    check: str  # bypass | gateway | cleartext | no-cert | wrong-cert
    connector: str
    family: int
    expect: str  # "accept", "refuse@rcpt", "530@mail", "refuse@rcpt|tls"
    options: ProbeOptions | None  # None: the row cannot run here (skip_reason says why)
    skip_reason: str = ""
    hint: str = ""  # shown when the row fails


@dataclass(frozen=True)
class RowResult:
    row: Row
    status: str  # pass | fail | skip
    got: str
    detail: str
    result: ProbeResult | None = None


def _sender_for(c: InboundConnector) -> str:
    """An envelope sender the connector covers (its first pattern)."""
    p = normalize_domain(c.sender_domains[0]) if c.sender_domains else "*"
    domain = "verify.mxgate.invalid" if p == "*" else p[2:] if p.startswith("*.") else p
    return f"{VERIFY_LOCAL}@{domain}"


def _recipient_for(policy: Policy, c: InboundConnector) -> str:
    """A recipient that exists, in a domain the connector covers."""
    scope = {normalize_domain(d) for d in c.associated_accepted_domains}
    domains = [normalize_domain(d.name) for d in policy.accepted_domains
               if not scope or normalize_domain(d.name) in scope]
    for m in policy.mailboxes:
        if not m.members and m.address.rpartition("@")[2].lower() in domains:
            return m.address
    return f"postmaster@{domains[0]}" if domains else "postmaster@mxgate.invalid"


def _source_address(c: InboundConnector, family: int) -> str | None:
    """The first host address of the connector's ranges in this family."""
    for text in c.sender_ip_addresses:
        net = parse_network(text)
        if net.version == family:
            return str(net.network_address if net.num_addresses == 1 else next(net.hosts()))
    return None


def _listed(c: InboundConnector, address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in parse_network(t) for t in c.sender_ip_addresses if parse_network(t).version == ip.version)


# Loopback sources for the bypass rows, tried in order: the first that no connector lists is used,
# so a connector admitting (say) 127.0.0.0/24 cannot turn a correct refusal into a false FAIL.
ATTACKERS = {4: ("127.0.0.66", "127.0.66.66", "127.66.66.66", "127.255.0.66"), 6: ("::1",)}


def pick_attacker(policy: Policy, family: int) -> str:
    """The first candidate source that no connector (of any type, enabled or not) lists; when
    every one is listed, the first (its rows are then skipped with the reason)."""
    listed = [c for c in policy.inbound_connectors if c.sender_ip_addresses]
    for candidate in ATTACKERS[family]:
        if not any(_listed(c, candidate) for c in listed):
            return candidate
    return ATTACKERS[family][0]


def _listed_elsewhere(policy: Policy, address: str) -> str | None:
    for c in policy.inbound_connectors:
        if c.enabled and c.sender_ip_addresses and _listed(c, address):
            return c.name
    return None


def can_bind(address: str) -> bool:
    """Whether this host can use `address` as a source (tests: any 127/8 address and ::1)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((address, 0))
        return True
    except OSError:
        return False


def plan_matrix(policy: Policy, s: VerifySettings) -> list[Row]:
    """Every row the policy implies. Pure: whether a source can be bound is checked at run time."""
    rows: list[Row] = []
    partners = [c for c in policy.inbound_connectors
                if c.type == "partner" and (c.sender_ip_addresses or c.tls_sender_certificate_name)]
    s = replace(s, attacker=s.attacker or pick_attacker(policy, 4), attacker6=s.attacker6 or pick_attacker(policy, 6))
    targets = [(4, s.target, s.attacker)] + ([(6, s.target6, s.attacker6)] if s.target6 else [])
    for c in partners:
        if not c.enabled:
            rows += _disabled_rows(policy, c, s, targets)
            continue
        base = ProbeOptions(host="", mail_from=_sender_for(c), rcpt_to=(_recipient_for(policy, c),),
                            ca_file=s.ca_file, tls_servername=s.tls_servername, timeout=s.timeout)
        open_hint = ("" if c.restricts else
                     f"connector {c.name!r} does not restrict its domains "
                     "(restrict_domains_to_ip_addresses and restrict_domains_to_certificate are false)")
        q = repr(c.name)
        for family, target, attacker in targets:
            at = replace(base, host=target.host, port=target.port)
            tag = "" if family == 4 else " (IPv6)"
            gateway = _source_address(c, family)
            if c.sender_ip_addresses:
                other = _listed_elsewhere(policy, attacker)
                if other:
                    rows.append(Row(f"bypass {q} from {attacker}{tag}", "bypass", c.name, family, "refuse@rcpt", None,
                                    f"{attacker} is listed by connector {other!r}; choose another --attacker"))
                else:
                    rows.append(Row(f"bypass {q} from {attacker}{tag}", "bypass", c.name, family, "refuse@rcpt",
                                    replace(at, source_address=attacker), hint=open_hint))
            if not gateway and c.tls_sender_certificate_name and family == 4:
                gateway = attacker  # a certificate connector admits its certificate from anywhere
            if gateway:
                tls = "require" if c.require_tls or c.tls_sender_certificate_name else "auto"
                cert = (s.client_cert, s.client_key) if c.tls_sender_certificate_name else (None, None)
                opts = replace(at, source_address=gateway, starttls=tls, send=s.send,
                               client_cert=cert[0], client_key=cert[1])
                skip = "" if not c.tls_sender_certificate_name or s.client_cert else "needs --client-cert"
                rows.append(Row(f"gateway {q} from {gateway}{tag}", "gateway", c.name, family, "accept",
                                None if skip else opts, skip))
                if c.require_tls and c.sender_ip_addresses:
                    rows.append(Row(f"clear text {q} from {gateway}{tag}", "cleartext", c.name, family, "530@mail",
                                    replace(at, source_address=gateway, starttls="off"),
                                    hint=f"connector {c.name!r} requires TLS"))
            if c.tls_sender_certificate_name and family == 4:
                src = gateway or s.attacker
                rows.append(Row(f"no certificate {q} from {src}", "no-cert", c.name, family, "refuse@rcpt|tls",
                                replace(at, source_address=src, starttls="require"), hint=open_hint))
                if s.wrong_cert:
                    rows.append(Row(f"wrong certificate {q} from {src}", "wrong-cert", c.name, family,
                                    "refuse@rcpt|tls", replace(at, source_address=src, starttls="require",
                                                               client_cert=s.wrong_cert, client_key=s.wrong_key),
                                    hint=open_hint))
                else:
                    rows.append(Row(f"wrong certificate {q} from {src}", "wrong-cert", c.name, family,
                                    "refuse@rcpt|tls", None, "needs --wrong-cert"))
    return rows


def _disabled_rows(policy: Policy, c: InboundConnector, s: VerifySettings, targets) -> list[Row]:
    """A disabled lock-down still names the domains it was meant to protect: probe them from
    outside; the row fails unless something else refuses the bypass."""
    base = ProbeOptions(host="", mail_from=_sender_for(c), rcpt_to=(_recipient_for(policy, c),),
                        ca_file=s.ca_file, tls_servername=s.tls_servername, timeout=s.timeout)
    rows = []
    for family, target, attacker in targets:
        name = f"bypass {c.name!r} (disabled) from {attacker}{'' if family == 4 else ' (IPv6)'}"
        other = _listed_elsewhere(policy, attacker)
        if other:
            rows.append(Row(name, "bypass", c.name, family, "refuse@rcpt", None,
                            f"{attacker} is listed by connector {other!r}; choose another --attacker"))
            continue
        rows.append(Row(name, "bypass", c.name, family, "refuse@rcpt",
                        replace(base, host=target.host, port=target.port, source_address=attacker),
                        hint=f"connector {c.name!r} is disabled (enabled = false): its lock-down is not enforced"))
    return rows


def judge_row(row: Row, result: ProbeResult) -> tuple[bool, str]:
    """(passed, explanation) — pure. Refusals pass at the expected stage or earlier."""
    got = describe(result)
    if row.expect == "accept":
        return result.outcome == "accept", f"accepted ({got})" if result.outcome == "accept" else f"expected accept, got {got}"
    if row.expect == "530@mail":
        ok = result.outcome == "reject" and result.stage == "mail" and result.code == 530
        return ok, f"clear text refused: {got}" if ok else f"expected 530 at MAIL, got {got}"
    limit = STAGES.index(row.expect.split("@")[1].split("|")[0])
    if result.outcome == "reject" and result.stage in STAGES and STAGES.index(result.stage) <= limit:
        return True, f"refused: {got}"
    if row.expect.endswith("|tls") and result.outcome == "error" and result.stage == "starttls":
        return True, f"refused in the TLS handshake ({result.reply})"
    return False, f"expected a refusal by {row.expect.split('@')[1].split('|')[0].upper()}, got {got}"


async def run_row(row: Row) -> RowResult:
    if row.options is None:
        return RowResult(row, "skip", "-", row.skip_reason)
    src = row.options.source_address
    if src and not can_bind(src):
        return RowResult(row, "skip", "-", f"cannot use {src} as a source address on this host")
    result = await run_probe(row.options)
    ok, why = judge_row(row, result)
    detail = why if ok or not row.hint else f"{why}; {row.hint}"
    return RowResult(row, "pass" if ok else "fail", describe(result), detail, result)


async def run_matrix(rows: list[Row], concurrency: int = CONCURRENCY) -> list[RowResult]:
    sem = asyncio.Semaphore(concurrency)

    async def one(r: Row) -> RowResult:
        async with sem:
            return await run_row(r)

    return list(await asyncio.gather(*(one(r) for r in rows)))


def failed(results: list[RowResult]) -> bool:
    return any(r.status == "fail" for r in results) or not any(r.status == "pass" for r in results)


def render_table(results: list[RowResult], notes: Sequence[str] = ()) -> str:
    """The matrix; `notes` are facts about the server that change how to read it (NOTE lines)."""
    width = max([len(r.row.name) for r in results] + [3])
    lines = [f"NOTE: {n}" for n in notes]
    lines.append(f"{'RESULT':6}  {'ROW':{width}}  EXPECT            GOT / DETAIL")
    for r in results:
        lines.append(f"{r.status.upper():6}  {r.row.name:{width}}  {r.row.expect:16}  {r.detail}")
    counts = {k: sum(r.status == k for r in results) for k in ("pass", "fail", "skip")}
    lines.append(f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped: "
                 f"{'FAIL' if failed(results) else 'PASS'}")
    return "\n".join(lines) + "\n"


def render_json(results: list[RowResult], notes: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "passed": not failed(results),
        "notes": list(notes),
        "rows": [{
            "name": r.row.name, "check": r.row.check, "connector": r.row.connector, "family": r.row.family,
            "expect": r.row.expect, "status": r.status, "got": r.got, "detail": r.detail,
            "stage": r.result.stage if r.result else None, "code": r.result.code if r.result else None,
            "enhanced": r.result.enhanced if r.result else None,
            "source": r.row.options.source_address if r.row.options else None,
        } for r in results],
    }
