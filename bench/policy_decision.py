"""P5: policy decision time with 1k, 10k and 100k CIDR entries across connectors.

Prints the mean time of one attribution lookup plus one RCPT decision (the work done per
recipient on the mailbox server). Target: < 5 µs at 100k entries, growing O(log n).
Each figure is the median of REPEATS passes over LOOKUPS addresses, in this process's CPU time:
the machine is shared, and wall time also counted whatever else ran while a pass did.
Usage: python bench/policy_decision.py [--json]
"""

from __future__ import annotations

import ipaddress
import json
import random
import statistics
import sys
import time

sys.path.insert(0, "src")

from mxgate.policy.attribution import SessionFacts, attribute_by_ip, compile_policy, decide_rcpt  # noqa: E402
from mxgate.policy.model import AcceptedDomain, InboundConnector, Mailbox, Organization, Policy  # noqa: E402
from mxgate.smtp.address import parse_path  # noqa: E402

SIZES = (1_000, 10_000, 100_000)
LOOKUPS = 50_000
REPEATS = 5


def _cpu_per_item(fn, items) -> float:
    """Median over REPEATS passes of fn(items)'s CPU time, per item, in seconds."""
    times = []
    for _ in range(REPEATS):
        t0 = time.process_time()
        fn(items)
        times.append(time.process_time() - t0)
    return statistics.median(times) / len(items)


def build(n: int, rng: random.Random):
    per_connector = max(1, n // 10)
    connectors = []
    for c in range(10):
        nets = set()
        while len(nets) < per_connector:
            if rng.random() < 0.8:
                nets.add(str(ipaddress.IPv4Network((rng.getrandbits(32) & ~0xFF, 24))))
            else:
                nets.add(str(ipaddress.IPv6Network(((0x2001 << 112) | (rng.getrandbits(64) << 48), 64 + 16))))
        connectors.append(InboundConnector(name=f"c{c}", sender_domains=("*",), sender_ip_addresses=tuple(sorted(nets)),
                                           restrict_domains_to_ip_addresses=True))
    policy = Policy(organization=Organization(), accepted_domains=(AcceptedDomain("contoso.test"),),
                    mailboxes=(Mailbox("alice@contoso.test"),), inbound_connectors=tuple(connectors))
    return policy


def measure(n: int) -> dict:
    rng = random.Random(n)
    policy = build(n, rng)
    t0 = time.perf_counter()
    compiled = compile_policy(policy, 1)
    compile_s = time.perf_counter() - t0
    ips = [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(LOOKUPS)]
    sender = parse_path("<a@fabrikam.test>", allow_null=True)
    rcpt = parse_path("<alice@contoso.test>", allow_null=False)

    def decide(ips):
        for ip in ips:
            facts = SessionFacts(peer_ip=ip, ip_connectors=attribute_by_ip(compiled, ip))
            decide_rcpt(compiled, facts, sender, rcpt)

    def lookup(ips):
        for ip in ips:
            attribute_by_ip(compiled, ip)

    per_decision = _cpu_per_item(decide, ips)
    per_lookup = _cpu_per_item(lookup, ips)
    return {"scenario": "P5", "entries": n, "lookup_us": round(per_lookup * 1e6, 2),
            "decision_us": round(per_decision * 1e6, 2), "compile_s": round(compile_s, 3)}


def main() -> None:
    results = [measure(n) for n in SIZES]
    print(f"{'entries':>8} {'lookup µs':>10} {'lookup+RCPT decision µs':>24} {'compile s':>10}")
    for r in results:
        print(f"{r['entries']:>8} {r['lookup_us']:>10} {r['decision_us']:>24} {r['compile_s']:>10}")
    ok = results[-1]["decision_us"] < 5
    print(f"target < 5 µs per decision at 100k entries: {'met' if ok else 'MISSED'} ({results[-1]['decision_us']} µs)")
    if "--json" in sys.argv:
        for r in results:
            print(json.dumps(r))


if __name__ == "__main__":
    main()
