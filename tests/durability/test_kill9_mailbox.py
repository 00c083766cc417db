"""Issue 3 must-show 6 / adversarial.md §1: `kill -9` of the mailbox server under a bounded load.

The client counts every message that got its final 250; after each restart all of them must be
in Maildir (duplicates allowed, loss never)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import rig
from rig import GATEWAY, RawSMTP, SubprocessNode, free_port

KILLS = 5
MAX_MESSAGES_PER_CYCLE = 400
PER_CYCLE = 11  # acknowledgements before each kill, plus a seeded random few: counted, never timed


def _load(port: int, acked: set[str], stop: threading.Event, prefix: str) -> None:
    """Persistent TLS sessions from the gateway address; record subjects acknowledged with 250."""
    n = 0
    while not stop.is_set() and n < MAX_MESSAGES_PER_CYCLE:
        try:
            with RawSMTP("127.0.0.1", port, GATEWAY, timeout=5) as c:
                c.greeting(); c.cmd("EHLO gw.test"); c.starttls(); c.cmd("EHLO gw.test")
                while not stop.is_set() and n < MAX_MESSAGES_PER_CYCLE:
                    subject = f"{prefix}-{n}"
                    n += 1
                    if c.cmd("MAIL FROM:<gw@fabrikam.test>")[0] != 250:
                        break
                    if c.cmd("RCPT TO:<alice@contoso.test>")[0] != 250 or c.cmd("DATA")[0] != 354:
                        break
                    c.send(rig.simple_message(subject=subject) + b".\r\n")
                    if c.read_reply()[0] == 250:
                        acked.add(subject)
        except (OSError, ConnectionError):
            time.sleep(0.05)  # server killed or restarting


def _delivered_subjects(home: Path) -> set[str]:
    out = set()
    new = home / "maildir" / "alice@contoso.test" / "new"
    for p in new.iterdir() if new.exists() else []:
        for line in p.read_bytes().split(b"\r\n"):
            if line.startswith(b"Subject: "):
                out.add(line[9:].decode())
                break
    return out


def test_no_acknowledged_message_lost_across_kill9(tmp_path):
    home = tmp_path / "home"
    from mxgate.config.home import Home

    h = Home.open(home)
    rig.apply_policy(h, rig.GUIDE_POLICY)
    port = free_port()
    config = tmp_path / "node.toml"
    config.write_text(f'[roles]\nadmin = false\n[mailbox]\nlisten = ["127.0.0.1:{port}"]\n')
    acked: set[str] = set()
    rng = random.Random(7)
    node = SubprocessNode(home, config)
    try:
        for cycle in range(KILLS):
            node.start(wait_for=("127.0.0.1", port))
            stop = threading.Event()
            t = threading.Thread(target=_load, args=(port, acked, stop, f"c{cycle}"))
            target = len(acked) + PER_CYCLE + rng.randint(0, 20)  # the kill lands at a varying point
            t.start()
            assert rig.wait_until(lambda: len(acked) >= target, timeout=120), "the load made no progress"
            node.kill9()
            stop.set()
            t.join(15)
        node.start(wait_for=("127.0.0.1", port))  # restart once more: recovery runs at start
        delivered = _delivered_subjects(home)
        lost = acked - delivered
        print(f"{KILLS} kills, {len(acked)} acknowledged, {len(delivered)} delivered, {len(lost)} lost")
        assert len(acked) >= KILLS * PER_CYCLE
        assert not lost, f"acknowledged but lost: {sorted(lost)[:10]}"
        tmp_files = list((home / "maildir" / "alice@contoso.test" / "tmp").iterdir())
        assert len(tmp_files) <= KILLS  # at most one partial write per kill, never in new/
    finally:
        node.stop()
