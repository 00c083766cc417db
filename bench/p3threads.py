"""P3 once (bench/endtoend.py), each role's CPU per message split by thread over the measured window.

Owns: the per-thread table behind "the mailbox costs more per message when fewer messages arrive
together" (issue 19, session 6): user and system CPU and voluntary context switches (sleeps: a
queue, a lock, the GIL, the disk) per message of every thread kind of the gateway's and the
mailbox's processes, read from /proc at the two points where P3 reads its process-tree CPU
(threads named by `py-spy dump`, as bench/threadcpu.py does). `off`: the bench gateway with
`cut_through = false` (the queue relays), to compare the arrival patterns on the same tree.
Must not know: what the threads do.

    python3 bench/p3threads.py [--tree DIR] [--count 1500] [--off]
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
ap.add_argument("--count", type=int, default=1500)
ap.add_argument("--off", action="store_true", help="cut_through = false in the bench gateway")
args = ap.parse_args()
tree, count, off = args.tree.resolve(), args.count, args.off
sys.path.insert(0, str(tree / "bench"))
os.environ["PYTHONPATH"] = str(tree / "src")  # the nodes run the tree's own code
import dataclasses  # noqa: E402
import accounting, endtoend, loadclient, peers, scenarios, threadcpu  # noqa: E401,E402  (the tree's own bench)
snaps = []  # (root pid, per-thread counters, names): gateway then mailbox, at the start and the end
real = accounting.tree_cpu_split


def split(pid):
    pids = accounting.tree_pids(pid)
    snaps.append((pid, threadcpu._threads(pids), threadcpu._names(pids) if len(snaps) < 2 else None))
    return real(pid)


accounting.tree_cpu_split = split
if off:
    orig = endtoend.GatewayPeer.__init__

    def init(self, *a, **k):
        orig(self, *a, **k)
        self.extra_gateway = "cut_through = false"

    endtoend.GatewayPeer.__init__ = init
root = Path(tempfile.mkdtemp(prefix="mxgate-h6low-"))
certs = peers.certificates(root / "certs")
tls = loadclient.client_context(str(certs.ca_cert))
dns = peers.DnsServer(root / "dns", records=dict(peers.SENDER_RECORDS)).start()
try:
    r = endtoend.p3(root / "p3", dataclasses.replace(scenarios.P3ONLY, p3_count=count), tls, dns, certs)
finally:
    dns.stop()
n = max(1, r.count)
d = r.detail
print(f"{'off' if off else 'on '} {r.count} msgs {r.rate:.0f} msg/s gw {d['cpu_gateway_us']} mbx {d['cpu_mailbox_us']} (user {d['cpu_mailbox_user_us']} sys {d['cpu_mailbox_sys_us']})")
# P3 reads each role's tree more than once at each point: the first and the last reading per root
first = {pid: i for i, (pid, _, _) in reversed(list(enumerate(snaps)))}
last = {pid: i for i, (pid, _, _) in enumerate(snaps)}
for role, pid in (("gateway", snaps[0][0]), ("mailbox", snaps[1][0])):
    b, e = first[pid], last[pid]
    names = snaps[b][2]
    rows = {}
    for key, (u1, s1, v1) in snaps[e][1].items():
        u0, s0, v0 = snaps[b][1].get(key, (0, 0, 0))
        k = threadcpu._kind(names.get(key, "other"))
        row = rows.setdefault(k, [0, 0, 0])
        row[0] += (u1 - u0) / n * 1e6; row[1] += (s1 - s0) / n * 1e6; row[2] += (v1 - v0) / n
    tot = [sum(r[i] for r in rows.values()) for i in range(3)]
    print(f"  {role}: user {tot[0]:.0f} sys {tot[1]:.0f} vcs {tot[2]:.1f}")
    for k, (u, s, v) in sorted(rows.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
        if u + s >= 5 or v >= 0.3:
            print(f"    {k:28} {u:6.0f} {s:6.0f} {v:6.2f}")
