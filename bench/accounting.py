"""Accounting: did every acknowledged message land exactly once where the peer keeps mail?

Owns: reading a peer's delivered messages (a Maildir `new/` or the null sink's record file),
matching their `X-Bench-Seq` against the sequence numbers the load client saw acknowledged,
and the verdict: a run that lost or duplicated a message is a failure, not a figure.
Also owns the peak-RSS sampler of a peer's process tree (read from /proc).
Must not know: SMTP, or how the load was generated.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SEQ = re.compile(rb"^X-Bench-Seq: (\S+)\r?$", re.M)
HEAD_BYTES = 16 * 1024  # the stamps a server prepends (Received, Return-Path, ARC...) fit in this


@dataclass
class Accounting:
    acked: int
    found: int  # messages of this run found where the peer keeps mail
    lost: int  # acknowledged, not found
    duplicated: int  # found more than once
    unacked_stored: int  # stored although the client saw no 250 (allowed: duplicates beat loss)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0

    def describe(self) -> str:
        return (f"acked {self.acked}, on disk {self.found}, lost {self.lost}, duplicated {self.duplicated}"
                f", stored without ack {self.unacked_stored}")


def spread_peers(root: Path) -> None:
    """Give each directory made in `root` a block group of its own (ext4's Orlov allocator, `chattr +T`),
    so one peer's file churn (Postfix's queue, the gateway's spool) is not paid by another peer's
    file creations: see seqs_in_maildir. On a filesystem without the flag this changes nothing."""
    subprocess.run(["chattr", "+T", str(root)], capture_output=True, check=False)


RECENTLY_DELETED_S = 5  # fs/ext4/ialloc.c RECENTCY_MIN: a freed inode whose table block is written back


def settle_filesystem() -> None:
    """Before a measurement: write every dirty block back, then let ext4's recently-deleted window
    pass, so files an earlier run (or its cleanup) deleted do not tax this run's file creations
    (see seqs_in_maildir). A kernel time window, not a state anything could wait on."""
    os.sync()
    time.sleep(RECENTLY_DELETED_S + 0.5)


def seqs_in_maildir(new_dir: Path, run_id: str, mark_read: bool = False) -> Counter:
    """Sequence numbers of this run found in `new_dir`; `mark_read` files each one counted into the
    Maildir's cur/ as seen, as an IMAP server does when the user reads it, so new/ stays small.

    Not deleted: on ext4 without a journal (this VM) the kernel skips every inode freed in the last
    5 s, or 305 s while its inode table block is dirty, when it allocates a new one
    (fs/ext4/ialloc.c, recently_deleted), one buffer lookup each. After the bench unlinked a
    round's 5,000 files, the next round's file creations in the same block group cost up to ~1 ms
    of system CPU each, whichever peer ran next (bench/RESULTS.md, session 5)."""
    found: Counter = Counter()
    cur = new_dir.parent / "cur"
    if mark_read:
        os.makedirs(cur, exist_ok=True)
    prefix = f"{run_id}-".encode()
    try:
        entries = list(os.scandir(new_dir))
    except FileNotFoundError:
        return found
    for entry in entries:
        try:
            with open(entry.path, "rb") as fh:
                head = fh.read(HEAD_BYTES)
        except OSError:
            continue
        m = SEQ.search(head)
        if m and m.group(1).startswith(prefix):
            found[m.group(1).decode()] += 1
            if mark_read:
                os.rename(entry.path, cur / f"{entry.name}:2,S")
    return found


def seqs_in_record(record: Path, run_id: str) -> Counter:
    prefix = f"{run_id}-"
    try:
        lines = record.read_text().split()
    except FileNotFoundError:
        return Counter()
    return Counter(s for s in lines if s.startswith(prefix))


def account(acked: list[str], found: Counter) -> Accounting:
    acked_set = set(acked)
    return Accounting(
        acked=len(acked), found=sum(found.values()),
        lost=sum(1 for s in acked_set if found.get(s, 0) == 0) + (len(acked) - len(acked_set)),
        duplicated=sum(n - 1 for n in found.values() if n > 1),
        unacked_stored=sum(1 for s in found if s not in acked_set))


def wait_for_mail(new_dir: Path, run_id: str, expected: int, timeout: float) -> Counter:
    """Count until at least `expected` messages of the run are there or `timeout` passes (async peers)."""
    end = time.monotonic() + timeout
    found = seqs_in_maildir(new_dir, run_id)
    while sum(found.values()) < expected and time.monotonic() < end:
        time.sleep(0.1)
        found = seqs_in_maildir(new_dir, run_id)
    return found


# --- peak RSS of a process tree ----------------------------------------------------------------

def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
            ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(name))
    return tree


def tree_pids(root: int) -> list[int]:
    """`root` and its live descendants."""
    tree = _children()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(tree.get(pid, ()))
    return out


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants now."""
    if not root:
        return 0
    tree = _children()
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, ()))
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            pass
    return total


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) used so far by `root` and its live descendants, and by
    children that exited (Postfix recycles its smtpd): `tree_cpu_split`'s sum."""
    return sum(tree_cpu_split(root))


def tree_cpu_split(root: int) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by `root` and its live descendants (`tree_cpu`'s
    parts: a file system's per-file cost lands in system time, Python's work in user time)."""
    if not root:
        return 0.0, 0.0
    tree = _children()
    user = system = 0.0
    todo, tick = [root], os.sysconf("SC_CLK_TCK")
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, ()))
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            user += (int(fields[11]) + int(fields[13])) / tick
            system += (int(fields[12]) + int(fields[14])) / tick
        except (OSError, ValueError, IndexError):
            pass
    return user, system


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat's first line: busy is
    user + nice + system + irq + softirq + steal. The rest of P3's window (beside the two nodes and
    the load client) is then other processes' work, and steal is the hypervisor's: on a shared VM
    host both move a run's figures without any change in mxgate."""
    with open("/proc/stat", "rb") as fh:
        f = [int(x) for x in fh.readline().split()[1:9]]
    tick = os.sysconf("SC_CLK_TCK")
    return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / tick, f[7] / tick


class RssSampler:
    """Samples a process tree's RSS every `interval` s while a load runs; `.peak` in bytes."""

    def __init__(self, root_pid: int, interval: float = 0.2):
        self.root, self.interval, self.peak = root_pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, tree_rss(self.root))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(self.root))
