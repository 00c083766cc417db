"""A/B of two source trees on P2's refusal flood: CPU per refused attempt, pairs interleaved.

Owns: the comparison behind "the benchmark is not slower" — the same flood (new connection per
attempt from 32 non-gateway addresses, refused at RCPT) against a mailbox node started from tree A
and from tree B, in pairs whose order alternates, each node in a fresh home. It reports the
server's process-tree CPU per refusal (user + system), which a shared machine disturbs far less
than attempts per second; each tree's own bench/peers.py starts its node, so an older tree keeps
its own settings. Must not know the other scenarios.

    python3 bench/abtrees.py --a /path/to/old/checkout --b . [--pairs 8] [--count 8000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

# One run in a child process: a tree's bench modules must not mix with the other's.
_ONE_RUN = r"""
import json, sys, tempfile
from pathlib import Path
tree, count, workers = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
sys.path.insert(0, str(tree / "bench"))
import accounting, loadclient, peers
root = Path(tempfile.mkdtemp(prefix="mxgate-ab-"))
certs = peers.certificates(root / "certs")
dns = peers.DnsServer(root / "dns", records=dict(peers.SENDER_RECORDS)).start()
mx = peers.MxgatePeer("mxgate", root / "mx", dns=dns.address, workers=workers, cert=str(certs.server_cert),
                      key=str(certs.server_key)).start()
sources = ["127.0.0.66"] + [f"127.0.66.{i}" for i in range(1, 32)]
try:
    loadclient.run(loadclient.bypass_flood("127.0.0.1", mx.port, concurrency=20, count=1000, sources=sources,
                                           deadline=60))  # warm-up: imports, caches, the trace table
    c0 = accounting.tree_cpu(mx.pid())
    res = loadclient.run(loadclient.bypass_flood("127.0.0.1", mx.port, concurrency=20, count=count, sources=sources,
                                                 deadline=120))
    cpu = accounting.tree_cpu(mx.pid()) - c0
    print(json.dumps({"refused": res.refused, "rate": res.rate(), "cpu_us": cpu / max(1, res.refused) * 1e6}))
finally:
    mx.stop()
    dns.stop()
"""


def one_run(tree: Path, count: int, workers: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _ONE_RUN, str(tree), str(count), str(workers)], capture_output=True,
                         text=True, timeout=600, cwd="/")
    if out.returncode != 0:
        raise SystemExit(f"run on {tree} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["refused"] != count:
        raise SystemExit(f"run on {tree}: {result['refused']} of {count} attempts refused")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", required=True, type=Path, help="checkout A (e.g. the tree before a change)")
    ap.add_argument("--b", required=True, type=Path, help="checkout B")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--count", type=int, default=8000)
    ap.add_argument("--workers", type=int, default=2, help="[node] workers, as bench/run.py runs P2")
    args = ap.parse_args()
    runs: dict[str, list[float]] = {"A": [], "B": []}
    ratios = []
    for i in range(args.pairs):
        order = ("A", "B") if i % 2 == 0 else ("B", "A")  # neither tree always runs first
        pair = {}
        for name in order:
            r = one_run((args.a if name == "A" else args.b).resolve(), args.count, args.workers)
            pair[name] = r["cpu_us"]
            runs[name].append(r["cpu_us"])
            print(f"pair {i + 1} {name}: {r['cpu_us']:.0f} µs CPU per refusal, {r['rate']:.0f} refusals/s", flush=True)
        ratios.append(pair["B"] / pair["A"])
    gmean = statistics.geometric_mean(ratios)
    print(f"A {args.a}: median {statistics.median(runs['A']):.0f} µs (runs {', '.join(f'{x:.0f}' for x in runs['A'])})")
    print(f"B {args.b}: median {statistics.median(runs['B']):.0f} µs (runs {', '.join(f'{x:.0f}' for x in runs['B'])})")
    print(f"B/A per pair: {', '.join(f'{x:.2f}' for x in ratios)}; geometric mean {gmean:.3f}")


if __name__ == "__main__":
    main()
