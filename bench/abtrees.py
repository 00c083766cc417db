"""A/B of two source trees on P2's refusal flood or P1's accepted load: CPU per message, pairs interleaved.

Owns: the comparison behind "the benchmark is not slower" — the same load against a mailbox node
started from tree A and from tree B, in pairs whose order alternates, each node in a fresh home.
`--scenario p2` (the default): a flood of new connections from 32 non-gateway addresses, refused
at RCPT. `--scenario p1`: P1 alone (20 persistent STARTTLS sessions from the gateway address, 2 KiB
messages, every message authenticated and stored before its 250, then counted on disk). It reports
the server's process-tree CPU per message (user + system), which a shared machine disturbs far
less than messages per second; each tree's own bench/peers.py starts its node, so an older tree
keeps its own settings. Must not know the other scenarios.

`--scenario p3`: each tree's own P3 (bench/endtoend.py: Internet client → gateway → relay →
mailbox with a partner connector, enhanced filtering and a trusted sealer); the figure is the
mailbox's process-tree CPU per message, the gateway's beside it.

    python3 bench/abtrees.py --a /path/to/old/checkout --b . [--scenario p1|p2|p3] [--pairs 8] [--count N]
                             [--workers W] [--workdir DIR]   (P1 default: the node's default, [node] workers = 0)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import accounting  # this file's own bench/ (sys.path[0])

# One run in a child process: a tree's bench modules must not mix with the other's.
_ONE_RUN = r"""
import json, sys, tempfile
from pathlib import Path
tree, count, workers = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
sys.path.insert(0, str(tree / "bench"))
import accounting, loadclient, peers
root = Path(tempfile.mkdtemp(prefix="mxgate-ab-", dir=sys.argv[4] or None))
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


# P1 alone: the tree's own scenarios.accept_load (warm-up, then the measured load, counted on disk).
# workers < 0: leave [node] workers at the node's default (trees whose MxgatePeer cannot, 1).
_ONE_P1 = r"""
import json, sys, tempfile, inspect
from pathlib import Path
tree, count, workers = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
sys.path.insert(0, str(tree / "bench"))
import loadclient, peers, scenarios
root = Path(tempfile.mkdtemp(prefix="mxgate-ab-", dir=sys.argv[4] or None))
certs = peers.certificates(root / "certs")
tls = loadclient.client_context(str(certs.ca_cert))
dns = peers.DnsServer(root / "dns", records=dict(peers.SENDER_RECORDS)).start()
kw = {} if workers < 0 else {"workers": workers}
mx = peers.MxgatePeer("mxgate", root / "mx", dns=dns.address, cert=str(certs.server_cert), key=str(certs.server_key),
                      **kw).start()
def split(root):  # (user, system) CPU seconds of the node's process tree, read here: older trees lack it
    import os
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", "rb") as fh:
                    kids.setdefault(int(fh.read().rsplit(b")", 1)[1].split()[1]), []).append(int(d))
            except OSError:
                pass
    user = system = 0.0
    todo, tick = [root], os.sysconf("SC_CLK_TCK")
    while todo:
        pid = todo.pop()
        todo.extend(kids.get(pid, ()))
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                f = fh.read().rsplit(b")", 1)[1].split()
            user += int(f[11]) / tick
            system += int(f[12]) / tick
        except (OSError, ValueError, IndexError):
            pass
    return user, system
# QUICK's 25 s deadline, but never shorter than 120 s: on a shared machine (load average 20) a
# 3,000-message run at ~100 msg/s hit it and the whole A/B stopped.
import dataclasses
mode = dataclasses.replace(scenarios.QUICK, deadline=max(120.0, scenarios.QUICK.deadline))
try:
    warm = scenarios.accept_load(mx, mode, "warm", 300, tls, scenario="warmup", rnd=0)
    u0, s0 = split(mx.pid())
    r = scenarios.accept_load(mx, mode, "P1ab", count, tls, scenario="P1", rnd=0)
    u1, s1 = split(mx.pid())
    n = max(1, r.count)
    print(json.dumps({"accepted": r.count if r.ok and warm.ok else -1, "rate": r.rate, "cpu_us": r.cpu_us_per_msg,
                      "user_us": (u1 - u0) / n * 1e6, "sys_us": (s1 - s0) / n * 1e6, "detail": r.detail}))
finally:
    mx.stop()
    dns.stop()
"""


# P3 alone: the tree's own endtoend.p3 with `count` messages (its peers, its measurement window).
_ONE_P3 = r"""
import dataclasses, json, sys, tempfile
from pathlib import Path
tree, count = Path(sys.argv[1]), int(sys.argv[2])
sys.path.insert(0, str(tree / "bench"))
import endtoend, loadclient, peers, scenarios
root = Path(tempfile.mkdtemp(prefix="mxgate-ab-", dir=sys.argv[4] or None))
certs = peers.certificates(root / "certs")
tls = loadclient.client_context(str(certs.ca_cert))
dns = peers.DnsServer(root / "dns", records=dict(peers.SENDER_RECORDS)).start()
try:
    r = endtoend.p3(root / "p3", dataclasses.replace(scenarios.P3ONLY, p3_count=count), tls, dns, certs)
    d = r.detail
    split = ({"user_us": d["cpu_mailbox_user_us"], "sys_us": d["cpu_mailbox_sys_us"],
              "gateway_user_us": d["cpu_gateway_user_us"]} if "cpu_mailbox_user_us" in d else {})  # newer trees
    print(json.dumps({"accepted": r.count if r.ok else -1, "rate": r.rate, "cpu_us": d["cpu_mailbox_us"],
                      "gateway_us": d["cpu_gateway_us"], **split, "detail": d}))
finally:
    dns.stop()
"""


def start_run(tree: Path, count: int, workers: int, scenario: str = "p2", workdir: str = "") -> subprocess.Popen:
    script = {"p1": _ONE_P1, "p3": _ONE_P3}.get(scenario, _ONE_RUN)
    return subprocess.Popen([sys.executable, "-c", script, str(tree), str(count), str(workers), workdir],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")


def finish_run(proc: subprocess.Popen, tree: Path, count: int, scenario: str) -> dict:
    stdout, stderr = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"run on {tree} failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    done = result["accepted"] if scenario in ("p1", "p3") else result["refused"]
    if done != count:
        raise SystemExit(f"run on {tree}: {done} of {count} messages as expected: {result.get('detail')}")
    return result


def one_run(tree: Path, count: int, workers: int, scenario: str = "p2", workdir: str = "") -> dict:
    return finish_run(start_run(tree, count, workers, scenario, workdir), tree, count, scenario)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", required=True, type=Path, help="checkout A (e.g. the tree before a change)")
    ap.add_argument("--b", required=True, type=Path, help="checkout B")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--scenario", choices=("p1", "p2", "p3"), default="p2")
    ap.add_argument("--together", action="store_true",
                    help="run A and B at the same time in each pair (each with its own load client and DNS "
                         "server): on a shared machine both see the same background load")
    ap.add_argument("--workdir", default="", help="where each run's home and Maildirs go (default: the temp dir); see run.py --workdir")
    ap.add_argument("--count", type=int, help="messages per run (P2: 8000, P1: 3000, P3: 600)")
    ap.add_argument("--workers", type=int, help="[node] workers (P2: 2, as bench/run.py runs it; P1: the node's default)")
    args = ap.parse_args()
    p1 = args.scenario in ("p1", "p3")  # messages, not refusals
    count = args.count or {"p1": 3000, "p3": 600}.get(args.scenario, 8000)
    workers = args.workers if args.workers is not None else (-1 if p1 else 2)
    unit = "message" if p1 else "refusal"
    runs: dict[str, list[float]] = {"A": [], "B": []}
    rates: dict[str, list[float]] = {"A": [], "B": []}
    gateways: dict[str, list[float]] = {"A": [], "B": []}  # P3: the gateway's CPU per message
    users: dict[str, list[float]] = {"A": [], "B": []}  # P1: user CPU alone (the Python work; system
    user_ratios = []  # time is mostly this VM's file creation and fsync, which moves with other load)
    ratios = []
    for i in range(args.pairs):
        order = ("A", "B") if i % 2 == 0 else ("B", "A")  # neither tree always runs first
        pair = {}
        together = {}
        accounting.settle_filesystem()  # the last pair's cleanup must not tax this pair
        if args.together:  # both trees under the same load at the same time: the machine's noise hits both
            together = {name: start_run((args.a if name == "A" else args.b).resolve(), count, workers, args.scenario,
                                        args.workdir) for name in order}
        for name in order:
            tree = (args.a if name == "A" else args.b).resolve()
            if not together and name != order[0]:
                accounting.settle_filesystem()  # nor the first run's the second's
            r = (finish_run(together[name], tree, count, args.scenario) if together
                 else one_run(tree, count, workers, args.scenario, args.workdir))
            pair[name] = r["cpu_us"]
            runs[name].append(r["cpu_us"])
            rates[name].append(r["rate"])
            split = f" (user {r['user_us']:.0f}, system {r['sys_us']:.0f})" if "user_us" in r else ""
            if "gateway_us" in r:  # P3: cpu_us is the mailbox's
                split = f" on the mailbox{split} (gateway {r['gateway_us']:.0f})"
                gateways[name].append(r["gateway_us"])
            if "user_us" in r:
                users[name].append(r["user_us"])
            print(f"pair {i + 1} {name}: {r['cpu_us']:.0f} µs CPU per {unit}{split}, {r['rate']:.0f} {unit}s/s", flush=True)
        ratios.append(pair["B"] / pair["A"])
        if users["A"] and users["B"]:
            user_ratios.append(users["B"][-1] / users["A"][-1])
    gmean = statistics.geometric_mean(ratios)
    for name, tree in (("A", args.a), ("B", args.b)):
        print(f"{name} {tree}: median {statistics.median(runs[name]):.0f} µs CPU per {unit} "
              f"(runs {', '.join(f'{x:.0f}' for x in runs[name])}); median {statistics.median(rates[name]):.0f} "
              f"{unit}s/s (runs {', '.join(f'{x:.0f}' for x in rates[name])})")
    print(f"B/A per pair: {', '.join(f'{x:.2f}' for x in ratios)}; geometric mean {gmean:.3f}")
    if gateways["A"] and gateways["B"]:
        g = [b / a for a, b in zip(gateways["A"], gateways["B"])]
        print(f"gateway: A median {statistics.median(gateways['A']):.0f}, B median {statistics.median(gateways['B']):.0f}"
              f" µs per message; B/A per pair {', '.join(f'{x:.2f}' for x in g)}; geometric mean "
              f"{statistics.geometric_mean(g):.3f}")
    if user_ratios:
        for name in ("A", "B"):
            print(f"{name} user CPU: median {statistics.median(users[name]):.0f} µs per {unit} "
                  f"(runs {', '.join(f'{x:.0f}' for x in users[name])})")
        print(f"B/A user CPU per pair: {', '.join(f'{x:.2f}' for x in user_ratios)}; geometric mean "
              f"{statistics.geometric_mean(user_ratios):.3f}")


if __name__ == "__main__":
    main()
