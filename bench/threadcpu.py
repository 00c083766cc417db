"""P1's load against one mailbox node, with its CPU per message split by thread (both processes).

Owns: the per-thread table behind the mailbox's "outside the event loop" work (issue 19): user
and system CPU per message of every thread kind (event loops, authentication threads, the group
commit and its I/O threads, the trace writer, the policy watcher, cluster sync...), read from
/proc/<pid>/task/<tid>/stat before and after the measured load, each thread named by `py-spy
dump` (Python thread names are not the kernel's). Optionally the same run under `strace -c -f`
(`--strace`: syscalls per message; strace slows the node ~3x, so per-second work counts more).
Must not know: what the threads do.

    python3 bench/threadcpu.py [--tree DIR] [--count 4000] [--sessions 20] [--strace]

`--sessions`: the load's persistent sessions (P1: 20); fewer sessions = fewer messages arriving
together, the mailbox's shape behind a cut-through gateway. "vcs" = voluntary context switches
per message (sleeps: waits for a lock, the GIL, a queue, the disk).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import accounting  # this file's own bench/ (sys.path[0]), before --tree's is put first


def _threads(pids: list[int]) -> dict[tuple[int, int], tuple[float, float]]:
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat", "rb") as fh:
                    f = fh.read().rsplit(b")", 1)[1].split()
                with open(f"/proc/{pid}/task/{tid}/status", "rb") as fh:
                    vcs = int(re.search(rb"^voluntary_ctxt_switches:\s*(\d+)", fh.read(), re.M).group(1))
                out[(pid, int(tid))] = (int(f[11]) / tick, int(f[12]) / tick, vcs)
            except (OSError, ValueError, IndexError, AttributeError):
                pass
    return out


def _names(pids: list[int]) -> dict[tuple[int, int], str]:
    """tid → Python thread name, from py-spy dump (its "Thread <tid> (idle): "name"" lines)."""
    names = {}
    for pid in pids:
        try:
            text = subprocess.run(["py-spy", "dump", "--nonblocking", "-p", str(pid)], capture_output=True,
                                  text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        for m in re.finditer(r'^Thread (0x[0-9A-Fa-f]+|\d+) \([^)]*\): "([^"]*)"', text, re.M):
            tid = int(m.group(1), 16) if m.group(1).startswith("0x") else int(m.group(1))
            names[(pid, tid)] = m.group(2)
    return names


def _kind(name: str) -> str:
    """Threads of one kind summed: 'mxgate-auth_3' → 'mxgate-auth_*'."""
    return re.sub(r"_\d+$", "_*", re.sub(r"worker-\d+", "worker-*", name))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--count", type=int, default=4000)
    ap.add_argument("--sessions", type=int, default=20, help="persistent load sessions (P1: 20)")
    ap.add_argument("--strace", action="store_true", help="also count syscalls (strace -c -f), slower")
    ap.add_argument("--perf", action="store_true", help="also `perf stat` the node's processes (context switches, "
                    "migrations, page faults per message)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tree = args.tree.resolve()
    sys.path.insert(0, str(tree / "bench"))
    os.environ["PYTHONPATH"] = str(tree / "src")
    import loadclient
    import peers
    import dataclasses
    import scenarios

    root = Path(tempfile.mkdtemp(prefix="mxgate-threads-"))
    accounting.settle_filesystem()
    certs = peers.certificates(root / "certs")
    tls = loadclient.client_context(str(certs.ca_cert))
    dns = peers.DnsServer(root / "dns", records=dict(peers.SENDER_RECORDS)).start()
    mx = peers.MxgatePeer("mxgate", root / "mx", dns=dns.address, cert=str(certs.server_cert),
                          key=str(certs.server_key)).start()
    strace = None
    try:
        warm = scenarios.accept_load(mx, scenarios.QUICK, "warm", 300, tls, scenario="warmup", rnd=0)
        pids = accounting.tree_pids(mx.pid())
        names = _names(pids)
        if args.strace:
            cmd = ["strace", "-c", "-f", "-o", str(root / "strace.txt")]
            for pid in pids:
                cmd += ["-p", str(pid)]
            strace = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
            import time
            time.sleep(1.0)  # strace attaches to every thread before the load starts
        perf = None
        if args.perf:
            perf = subprocess.Popen(["perf", "stat", "-x", ",", "-o", str(root / "perf.txt"), "-e",
                                     "task-clock,context-switches,cpu-migrations,page-faults",
                                     "-p", ",".join(map(str, pids))], stderr=subprocess.DEVNULL)
            import time
            time.sleep(0.5)
        before = _threads(pids)
        mode = dataclasses.replace(scenarios.QUICK, sessions=args.sessions)
        r = scenarios.accept_load(mx, mode, "P1threads", args.count, tls, scenario="P1", rnd=0)
        after = _threads(pids)
        if perf is not None:
            perf.send_signal(2)
            perf.wait(timeout=30)
        if strace is not None:
            strace.send_signal(2)
            strace.wait(timeout=30)
        n = max(1, r.count)
        by_kind: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0, 0.0])
        for key, (u1, s1, v1) in after.items():
            u0, s0, v0 = before.get(key, (0.0, 0.0, 0))
            row = by_kind[_kind(names.get(key, f"tid {key[1]}"))]
            row[0] += (u1 - u0) / n * 1e6
            row[1] += (s1 - s0) / n * 1e6
            row[2] += 1
            row[3] += (v1 - v0) / n
        total_u = sum(v[0] for v in by_kind.values())
        total_s = sum(v[1] for v in by_kind.values())
        result = {"accepted": r.count if (r.ok and warm.ok) else -1, "rate": r.rate, "cpu_us": r.cpu_us_per_msg,
                  "user_us": total_u, "sys_us": total_s,
                  "vcs": sum(v[3] for v in by_kind.values()),
                  "threads": {k: [round(v[0]), round(v[1]), v[2], round(v[3], 2)] for k, v in by_kind.items()}}
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{result['accepted']} messages, {r.rate:.0f} msg/s, {r.cpu_us_per_msg:.0f} µs CPU per message "
                  f"(threads: user {total_u:.0f}, system {total_s:.0f}; {result['vcs']:.1f} vcs)")
            print(f"{'thread (both processes)':32} {'n':>3} {'user':>6} {'system':>6} {'vcs':>6}")
            for k, (u, s, c, v) in sorted(by_kind.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
                if u + s >= 0.5:
                    print(f"{k:32} {c:3} {u:6.0f} {s:6.0f} {v:6.2f}")
        if perf is not None:
            print("perf stat per message (whole attach, a little past the load):")
            for line in (root / "perf.txt").read_text().splitlines():
                f = line.split(",")
                if len(f) > 3 and f[0].replace(".", "").isdigit():
                    print(f"  {f[2]:18} {float(f[0]) / n:9.2f}")
        if strace is not None:
            text = (root / "strace.txt").read_text()
            print("syscalls per message:")
            for line in text.splitlines():
                f = line.split()
                if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
                    calls = int(f[3])
                    if calls / n >= 0.05:
                        print(f"  {f[-1]:16} {calls / n:7.2f}")
    finally:
        if strace is not None and strace.poll() is None:
            strace.kill()
        mx.stop()
        dns.stop()


if __name__ == "__main__":
    main()
