"""DiskSpool: durable enqueue, crash recovery, atomic rewrites, due() ordering, guards."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from mxgate.durable import GroupCommitter
from mxgate.queue.spool import (
    QUEUES,
    CorruptEntryError,
    RcptState,
    Recipient,
    DiskSpool,
    StaleEntryError,
    disk_free_ok,
    parse_queue_file,
)

MSG = b"From: a@sender.example\r\nSubject: s\r\n\r\nbody\r\n#END not a real end record\r\n"


@pytest.fixture
def spool(tmp_path, committer):
    return DiskSpool.open(tmp_path / "spool", committer)


async def test_enqueue_is_durable_and_reopens(spool, tmp_path, committer):
    entry = await spool.enqueue("a@sender.example", ["b@contoso.test", "c@contoso.test"], MSG, {"trace_id": "t1", "client_ip": "192.0.2.7"}, now=1000.0)
    assert entry.queue == "incoming" and entry.attempts == 0 and entry.next_attempt == 1000.0
    assert entry.pending == ("b@contoso.test", "c@contoso.test")
    assert {d.name for d in (tmp_path / "spool").iterdir()} == {*QUEUES, "tmp"}
    assert list((tmp_path / "spool" / "tmp").iterdir()) == []
    assert await spool.open_message(entry) == MSG

    reopened = DiskSpool.open(tmp_path / "spool", committer)
    again = reopened.get(entry.queue_id)
    assert again == entry
    assert again.meta["client_ip"] == "192.0.2.7"
    assert reopened.read_message(again) == MSG
    assert reopened.recovery.loaded == 1 and reopened.recovery.discarded == ()


async def test_file_format_has_header_body_and_end_record(spool):
    entry = await spool.enqueue("", ["b@contoso.test"], MSG, now=5.0)
    raw = spool.path_of(entry).read_bytes()
    header, rest = raw.split(b"\n", 1)
    assert header.startswith(b"MXGQ1 ")
    assert json.loads(header[6:])["id"] == entry.queue_id
    assert rest.startswith(MSG)
    assert rest[len(MSG) :].startswith(b"\n#END ") and raw.endswith(b"\n")
    assert parse_queue_file(raw, "incoming", entry.queue_id).sender == ""


async def test_recovery_discards_partial_and_sets_aside_corrupt(spool, tmp_path, committer):
    root = tmp_path / "spool"
    good = await spool.enqueue("a@x.example", ["b@contoso.test"], MSG, now=1.0)
    torn = await spool.enqueue("a@x.example", ["b@contoso.test"], MSG, now=2.0)
    bitrot = await spool.enqueue("a@x.example", ["b@contoso.test"], MSG, now=3.0)
    # A crash mid-write: the file stops before its END record.
    raw = spool.path_of(torn).read_bytes()
    spool.path_of(torn).write_bytes(raw[: len(raw) - 40])
    # A flipped byte in the body: complete file, wrong checksum.
    raw = bytearray(spool.path_of(bitrot).read_bytes())
    raw[bitrot.body_offset + 3] ^= 0x20
    spool.path_of(bitrot).write_bytes(bytes(raw))
    (root / "tmp" / "half-written").write_bytes(b"MXGQ1 {")
    (root / "deferred" / "NOTANID").write_bytes(b"junk")

    reopened = DiskSpool.open(root, committer)
    report = reopened.recovery
    assert [e.queue_id for e in reopened.list()] == [good.queue_id]
    assert report.discarded == (f"incoming/{torn.queue_id}",)
    assert set(report.corrupted) == {f"incoming/{bitrot.queue_id}", "deferred/NOTANID"}
    assert not spool.path_of(torn).exists()
    assert len(list((root / "corrupt").iterdir())) == 2
    assert list((root / "tmp").iterdir()) == []


async def test_active_entries_are_requeued_after_a_crash(spool, tmp_path, committer):
    entry = await spool.claim(await spool.enqueue("a@x.example", ["b@contoso.test"], MSG, now=1.0))
    assert entry.queue == "active" and spool.due(10.0) == []
    reopened = DiskSpool.open(tmp_path / "spool", committer)
    assert reopened.recovery.requeued == (entry.queue_id,)
    assert reopened.get(entry.queue_id).queue == "deferred"
    assert [e.queue_id for e in reopened.due(10.0)] == [entry.queue_id]


async def test_a_claim_syncs_no_directory_and_a_lost_claim_is_tried_once(spool, tmp_path, committer, monkeypatch):
    """Issue 19: the claim's rename is not made durable (two directory fsyncs per relayed
    message) nor handed to the committer. After a crash that lost it the entry is still in
    incoming/ and is offered once; the settle after a delivery is durable as before."""
    import mxgate.durable as durable

    synced = []
    real = durable.sync_directory
    monkeypatch.setattr(durable, "sync_directory", lambda p: synced.append(p.name) or real(p))
    entry = await spool.enqueue("a@x.example", ["b@contoso.test"], MSG, now=1.0)
    assert synced == ["incoming"]  # the enqueue before its 250: durable
    synced.clear()
    jobs = committer.stats.jobs
    claimed = await spool.claim(entry)
    assert claimed.queue == "active" and synced == [] and spool.due(10.0) == []
    assert committer.stats.jobs == jobs and spool.path_of(claimed).exists()
    with pytest.raises(StaleEntryError):  # still guarded against a second claim
        await spool.claim(entry)
    os.replace(spool.path_of(claimed), spool.path_of(entry))  # the crash lost the rename
    reopened = DiskSpool.open(tmp_path / "spool", committer)
    assert [e.queue_id for e in reopened.due(10.0)] == [entry.queue_id]
    again = await reopened.claim(reopened.get(entry.queue_id))
    assert await reopened.mark_delivered(again, again.pending) is None
    assert "active" in synced  # the removal is durable
    assert DiskSpool.open(tmp_path / "spool", committer).due(10.0) == []


async def test_a_fresh_message_is_relayed_from_memory_once_and_then_from_disk(spool, tmp_path, monkeypatch):
    """Issue 19: a message enqueued from memory is not read back from the file just written for
    its first attempt; the file is written and synced all the same, and every later read (a
    retry, another process after a restart) comes from the disk."""
    from mxgate.queue import spool as spool_mod
    from mxgate.smtp.source import MessageSource

    entry = await spool.enqueue("a@x.example", ["b@contoso.test"], MessageSource.from_bytes(MSG).split_head(1000),
                                now=1.0)
    assert spool.read_message(entry) == MSG  # on disk before enqueue returned
    reads = []
    real_read = spool.read_message
    monkeypatch.setattr(spool, "read_message", lambda e: reads.append(e.queue_id) or real_read(e))
    claimed = await spool.claim(entry)
    assert await spool.open_message(claimed) == MSG and reads == []
    assert await spool.open_message(claimed) == MSG and reads == [entry.queue_id]  # kept for one read only
    deferred = await spool.defer(claimed, claimed.pending, "e", 5.0)
    assert await spool.open_message(deferred) == MSG and len(reads) == 2

    # A source read from a spill file is not copied into memory; nor is a message over FRESH_MAX.
    with open(tmp_path / "spill", "w+b") as fh:
        fh.write(MSG)
        fh.flush()
        on_disk = await spool.enqueue("a@x.example", ["b@contoso.test"], MessageSource(b"", fd=fh.fileno(), size=len(MSG)))
    big = MSG + b"x" * spool_mod.FRESH_MAX
    large = await spool.enqueue("a@x.example", ["b@contoso.test"], big)
    assert await spool.open_message(on_disk) == MSG and await spool.open_message(large) == big and len(reads) == 4

    # Bounded in all: the oldest kept copies go back to disk reads; a removed entry's copy is dropped.
    monkeypatch.setattr(spool_mod, "FRESH_TOTAL", 2 * len(MSG))
    first, second, third = [await spool.enqueue("a@x.example", ["b@contoso.test"], MSG) for _ in range(3)]
    assert spool._fresh_bytes == 2 * len(MSG) and first.queue_id not in spool._fresh
    await spool.remove(second)
    assert list(spool._fresh) == [third.queue_id] and spool._fresh_bytes == len(MSG)
    assert await spool.open_message(first) == MSG and await spool.open_message(third) == MSG
    assert len(reads) == 5 and spool._fresh_bytes == 0


async def test_a_delivered_entrys_file_is_kept_and_written_over_by_the_next_enqueue(spool, tmp_path, committer,
                                                                                   monkeypatch):
    """Issue 19: a delivered entry's file is renamed into tmp/ (its removal from the queue as
    durable as the unlink was: active/ synced) and the next enqueue writes over it — the same
    inode, no new one — synced before the rename that publishes it; a shorter message leaves no
    old tail (recovery would discard the file as partial), a longer one is whole."""
    import mxgate.durable as durable

    root = tmp_path / "spool"
    events = []
    real_dir, real_data = durable.sync_directory, durable._sync_file
    monkeypatch.setattr(durable, "sync_directory", lambda p: events.append(p.name) or real_dir(p))
    monkeypatch.setattr(durable, "_sync_file", lambda fd: events.append("data") or real_data(fd))
    long_msg = MSG * 40
    first = await spool.claim(await spool.enqueue("a@x.example", ["b@contoso.test"], long_msg, now=1.0))
    ino = spool.path_of(first).stat().st_ino
    events.clear()
    assert await spool.mark_delivered(first, first.pending) is None
    assert sorted(events) == ["active", "tmp"]  # the removal is durable; the kept name too
    assert [p.stat().st_ino for p in (root / "tmp").iterdir()] == [ino]
    assert all(list((root / q).iterdir()) == [] for q in QUEUES)

    events.clear()
    short = await spool.enqueue("a@x.example", ["c@contoso.test"], MSG, now=2.0)
    assert events == ["data", "incoming"]  # synced, renamed, its directory synced: before enqueue returns
    assert spool.path_of(short).stat().st_ino == ino and list((root / "tmp").iterdir()) == []
    reopened = DiskSpool.open(root, committer)
    assert reopened.recovery.discarded == () and reopened.recovery.corrupted == ()
    assert [e.queue_id for e in reopened.list()] == [short.queue_id]
    assert reopened.read_message(reopened.get(short.queue_id)) == MSG

    second = await spool.claim(short)
    assert await spool.mark_delivered(second, second.pending) is None
    longer = await spool.enqueue("a@x.example", ["d@contoso.test"], long_msg + b"tail\r\n", now=3.0)
    assert spool.path_of(longer).stat().st_ino == ino
    assert DiskSpool.open(root, committer).read_message(longer) == long_msg + b"tail\r\n"


async def test_a_kept_file_never_comes_back_as_an_entry_after_a_crash(spool, tmp_path, committer):
    """The kept file still holds the delivered entry's whole, valid queue file: recovery must
    empty tmp/ and never load it (a delivered message would be relayed again); the entries
    still queued are all there."""
    root = tmp_path / "spool"
    waiting = await spool.enqueue("a@x.example", ["w@contoso.test"], MSG, now=1.0)
    done = await spool.claim(await spool.enqueue("a@x.example", ["b@contoso.test"], MSG, now=2.0))
    assert await spool.mark_delivered(done, done.pending) is None
    (kept,) = (root / "tmp").iterdir()
    assert parse_queue_file(kept.read_bytes(), "active", done.queue_id).queue_id == done.queue_id
    reopened = DiskSpool.open(root, committer)  # the process died here
    assert [e.queue_id for e in reopened.list()] == [waiting.queue_id]
    assert reopened.recovery.requeued == () and list((root / "tmp").iterdir()) == []
    # The new process starts with no kept files and creates its own.
    fresh = await reopened.enqueue("a@x.example", ["b@contoso.test"], MSG, now=3.0)
    assert reopened.read_message(fresh) == MSG


async def test_kept_files_are_bounded_in_number_and_size_and_never_shared(spool, tmp_path, committer, monkeypatch):
    from mxgate.queue import spool as spool_mod

    root = tmp_path / "spool"
    monkeypatch.setattr(spool_mod, "KEEP_MAX", 5)
    entries = await asyncio.gather(*(spool.enqueue("a@x.example", ["b@contoso.test"], MSG + b"%d\r\n" % i, now=i)
                                     for i in range(8)))
    big = await spool.enqueue("a@x.example", ["b@contoso.test"], b"x" * spool_mod.KEEP_SIZE, now=9.0)
    claimed = [await spool.claim(e) for e in [big, *entries]]
    assert await asyncio.gather(*(spool.mark_delivered(e, e.pending) for e in claimed)) == [None] * 9
    kept = list((root / "tmp").iterdir())
    assert len(kept) == 5 and len(spool._kept) == 5 and big.size > max(p.stat().st_size for p in kept)
    # Enqueues at once each get a file of their own (five written over, three created).
    again = await asyncio.gather(*(spool.enqueue("a@x.example", ["c@contoso.test"], b"new %d\r\n" % i * (i + 1))
                                   for i in range(8)))
    assert len({spool.path_of(e).stat().st_ino for e in again}) == 8 and spool._kept == []
    reopened = DiskSpool.open(root, committer)
    assert reopened.recovery.discarded == () and reopened.recovery.corrupted == ()
    assert sorted(reopened.read_message(e) for e in again) == sorted(b"new %d\r\n" % i * (i + 1) for i in range(8))


def test_header_line_matches_the_asdict_form_byte_for_byte():
    """Differential (issue 19): the queue file header built field by field is the same bytes as
    the dataclasses.asdict form it replaced, for every recipient state and optional field."""
    import dataclasses
    import itertools
    from types import MappingProxyType

    from mxgate.queue.spool import QueueEntry, _header_line

    def old_line(entry):
        rcpts = [{k: v for k, v in dataclasses.asdict(r).items() if v is not None} for r in entry.recipients]
        for r in rcpts:
            r["state"] = RcptState(r["state"]).value
        header = {"id": entry.queue_id, "sender": entry.sender, "recipients": rcpts, "arrival": entry.arrival,
                  "attempts": entry.attempts, "next_attempt": entry.next_attempt, "last_error": entry.last_error,
                  "meta": dict(entry.meta), "size": entry.size, "revision": entry.revision}
        return b"MXGQ1 " + json.dumps(header, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"

    options = [None, "4.4.1", "smtp; 451 \u00e9t\u00e9 \"later\""]
    rcpts = [Recipient(f"r{i}@contoso.test", state, status, error, mta)
             for i, (state, status, error, mta) in enumerate(itertools.product(RcptState, options, options, [None, "mx.test"]))]
    for n in (1, 2, len(rcpts)):
        entry = QueueEntry("0123456789ABCDEF0123", "incoming", "a@x.example", tuple(rcpts[:n]), 1.5, 2, 3.25, "e",
                           MappingProxyType({"trace_id": "t", "k\u00e9": [1, None]}), 99, 3, 0)
        assert _header_line(entry) == old_line(entry)


async def test_defer_rewrites_atomically_and_keeps_the_body(spool, tmp_path):
    entry = await spool.enqueue("a@x.example", ["b@contoso.test", "c@contoso.test"], MSG, now=1.0)
    old_path = spool.path_of(entry)
    old_inode = old_path.stat().st_ino
    deferred = await spool.defer(entry, entry.pending, "smtp; 451 4.3.0 busy", 400.0, status="4.3.0", remote_mta="mbx.contoso.test")
    assert deferred.queue == "deferred" and deferred.attempts == 1 and deferred.revision == 2
    assert deferred.next_attempt == 400.0 and deferred.last_error == "smtp; 451 4.3.0 busy"
    assert all(r.status == "4.3.0" and r.state is RcptState.PENDING for r in deferred.recipients)
    assert not old_path.exists()
    assert spool.path_of(deferred).stat().st_ino != old_inode  # a new file, never edited in place
    assert spool.read_message(deferred) == MSG
    assert list((tmp_path / "spool" / "tmp").iterdir()) == []
    # Defer again in place: the same name is replaced by rename.
    again = await spool.defer(deferred, ["c@contoso.test"], "smtp; 421 4.4.2 gone", 900.0)
    assert again.attempts == 2 and spool.read_message(again) == MSG
    assert [p.name for p in (tmp_path / "spool" / "deferred").iterdir()] == [entry.queue_id]


async def test_crash_between_rewrite_and_unlink_keeps_newest_revision(spool, tmp_path, committer):
    entry = await spool.enqueue("a@x.example", ["b@contoso.test"], MSG, now=1.0)
    saved = spool.path_of(entry).read_bytes()
    newer = await spool.defer(entry, entry.pending, "e", 50.0)
    spool.path_of(entry).write_bytes(saved)  # the old revision survived the crash
    reopened = DiskSpool.open(tmp_path / "spool", committer)
    assert reopened.get(entry.queue_id).revision == newer.revision
    assert not spool.path_of(entry).exists()


async def test_partial_delivery_then_completion_removes_the_file(spool):
    entry = await spool.enqueue("a@x.example", ["b@contoso.test", "c@contoso.test", "d@contoso.test"], MSG, now=1.0)
    step = await spool.settle(
        entry,
        [
            Recipient("b@contoso.test", RcptState.DELIVERED),
            Recipient("c@contoso.test", RcptState.FAILED, "5.1.1", "smtp; 550 5.1.1 unknown"),
            Recipient("d@contoso.test", RcptState.PENDING, "4.2.2", "smtp; 452 4.2.2 full"),
        ],
        next_attempt=60.0,
    )
    assert step.pending == ("d@contoso.test",)
    assert [r.address for r in step.failed] == ["c@contoso.test"]
    assert step.queue == "deferred" and step.last_error == "smtp; 452 4.2.2 full"
    assert await spool.mark_delivered(step, ["d@contoso.test"]) is None
    assert not spool.path_of(step).exists() and spool.count() == 0


async def test_mark_failed_last_recipient_removes(spool):
    entry = await spool.enqueue("a@x.example", ["b@contoso.test"], MSG, now=1.0)
    assert await spool.mark_failed(entry, ["b@contoso.test"], "smtp; 550 5.1.1 no") is None
    assert spool.get(entry.queue_id) is None


async def test_due_orders_by_next_attempt_and_skips_hold_and_future(spool):
    a = await spool.enqueue("s@x.example", ["r@contoso.test"], MSG, now=10.0)
    b = await spool.enqueue("s@x.example", ["r@contoso.test"], MSG, now=20.0)
    c = await spool.enqueue("s@x.example", ["r@contoso.test"], MSG, now=30.0)
    d = await spool.enqueue("s@x.example", ["r@contoso.test"], MSG, now=5.0)
    a = await spool.defer(a, a.pending, "later", 100.0)
    d = await spool.hold(d)
    assert [e.queue_id for e in spool.due(50.0)] == [b.queue_id, c.queue_id]
    assert [e.queue_id for e in spool.due(100.0)] == [b.queue_id, c.queue_id, a.queue_id]
    assert [e.queue_id for e in spool.list()] == [d.queue_id, a.queue_id, b.queue_id, c.queue_id]
    assert spool.count("hold") == 1 and spool.count() == 4
    d = await spool.release(d)
    assert d.queue == "deferred" and d.queue_id in {e.queue_id for e in spool.due(100.0)}


async def test_stale_and_concurrent_changes_are_refused(spool):
    entry = await spool.enqueue("s@x.example", ["r@contoso.test", "q@contoso.test"], MSG, now=1.0)
    newer = await spool.mark_delivered(entry, ["r@contoso.test"])
    with pytest.raises(StaleEntryError):
        await spool.defer(entry, ["q@contoso.test"], "e", 5.0)
    with pytest.raises(ValueError):
        await spool.defer(newer, ["r@contoso.test"], "already delivered", 5.0)
    with pytest.raises(ValueError):
        await spool.settle(newer, [Recipient("q@contoso.test")])  # deferral without a time
    first = asyncio.ensure_future(spool.defer(newer, ["q@contoso.test"], "e", 5.0))
    await asyncio.sleep(0)
    with pytest.raises(StaleEntryError):
        await spool.remove(newer)
    assert (await first).attempts == 1
    with pytest.raises(StaleEntryError):
        await spool.release(await first)


async def test_checksum_failure_on_read_and_mark_corrupt(spool, tmp_path, monkeypatch):
    from mxgate.queue import spool as spool_mod

    monkeypatch.setattr(spool_mod, "FRESH_MAX", 0)  # read from the file, as every read but a first attempt's
    entry = await spool.enqueue("s@x.example", ["r@contoso.test"], MSG, now=1.0)
    raw = bytearray(spool.path_of(entry).read_bytes())
    raw[-10] = ord("0") if raw[-10] != ord("0") else ord("1")
    spool.path_of(entry).write_bytes(bytes(raw))
    with pytest.raises(CorruptEntryError):
        await spool.open_message(entry)
    await spool.mark_corrupt(entry)
    assert spool.count() == 0
    assert [p.name for p in (tmp_path / "spool" / "corrupt").iterdir()] == [entry.queue_id]


async def test_unserialisable_metadata_is_refused_before_writing(spool, tmp_path):
    with pytest.raises(TypeError):
        await spool.enqueue("s@x.example", ["r@contoso.test"], MSG, {"x": object()})
    with pytest.raises(ValueError):
        await spool.enqueue("s@x.example", [], MSG)
    assert list((tmp_path / "spool" / "incoming").iterdir()) == []


def test_disk_free_ok(tmp_path):
    assert disk_free_ok(tmp_path, 1)
    assert not disk_free_ok(tmp_path, 1 << 62)
    assert not disk_free_ok(tmp_path, 1, min_free_inodes=1 << 62) or os.statvfs(tmp_path).f_files == 0


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from mxgate.durable import GroupCommitter
    from mxgate.queue.spool import DiskSpool

    async def main():
        c = GroupCommitter(); c.start()
        spool = DiskSpool.open(sys.argv[1], c)
        async def one(i):
            e = await spool.enqueue("s@x.example", ["r@contoso.test"], b"msg %d\\r\\n" % i * 50)
            print(e.queue_id, flush=True)  # the "250": only after enqueue returned
        i = 0
        while True:
            await asyncio.gather(*(one(i + k) for k in range(20)))
            i += 20

    asyncio.run(main())
    """
)


def test_kill_9_loses_no_acknowledged_entry(tmp_path):
    root = tmp_path / "spool"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(root)], stdout=subprocess.PIPE, text=True)
    acked: list[str] = []
    try:
        for line in proc.stdout:
            acked.append(line.strip())
            if len(acked) >= 300:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    acked += [line.strip() for line in proc.stdout.read().splitlines() if line.strip()]
    assert len(acked) >= 300

    async def check():
        c = GroupCommitter()
        c.start()
        try:
            spool = DiskSpool.open(root, c)
            assert set(acked) <= {e.queue_id for e in spool.list()}
            assert spool.recovery.corrupted == ()
        finally:
            await c.aclose()

    asyncio.run(check())


CHILD_DELIVERING = textwrap.dedent(
    """
    import asyncio, sys
    from mxgate.durable import GroupCommitter
    from mxgate.queue.spool import DiskSpool

    async def main():
        c = GroupCommitter(); c.start()
        spool = DiskSpool.open(sys.argv[1], c)
        async def one(i):
            e = await spool.enqueue("s@x.example", ["r@contoso.test"], b"msg %d\\r\\n" % i * (1 + i % 90))
            print("A", e.queue_id, i, flush=True)  # the "250": only after enqueue returned
            if i % 2:
                e = await spool.claim(e)
                await spool.mark_delivered(e, e.pending)
                print("D", e.queue_id, i, flush=True)  # settled: its file kept in tmp/ for reuse
        i = 0
        while True:
            await asyncio.gather(*(one(i + k) for k in range(20)))
            i += 20

    asyncio.run(main())
    """
)


def test_kill_9_while_files_are_kept_and_written_over_loses_and_revives_nothing(tmp_path):
    """Issue 19: with delivered entries' files written over by new ones, a killed process's
    spool holds every acknowledged, undelivered message with its own bytes, and no delivered one."""
    root = tmp_path / "spool"
    proc = subprocess.Popen([sys.executable, "-c", CHILD_DELIVERING, str(root)], stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            if len(lines) >= 900:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    lines += [line.strip() for line in proc.stdout.read().splitlines() if line.strip()]
    acked = {qid: int(i) for kind, qid, i in (line.split() for line in lines) if kind == "A"}
    delivered = {qid for kind, qid, _ in (line.split() for line in lines) if kind == "D"}
    assert len(delivered) >= 200

    async def check():
        c = GroupCommitter()
        c.start()
        try:
            spool = DiskSpool.open(root, c)
            found = {e.queue_id: e for e in spool.list()}
            assert set(acked) - delivered <= set(found) and not delivered & set(found)
            for qid, entry in found.items():
                i = acked.get(qid)
                if i is not None:
                    assert spool.read_message(entry) == b"msg %d\r\n" % i * (1 + i % 90)
            assert spool.recovery.corrupted == () and spool.recovery.discarded == ()
        finally:
            await c.aclose()

    asyncio.run(check())
