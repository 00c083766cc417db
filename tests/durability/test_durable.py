"""GroupCommitter: batching, per-file and per-directory syncs, failure isolation, lifecycle."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import threading

import pytest

from mxgate.durable import (
    CommitterClosedError,
    GroupCommitter,
    MoveFile,
    RemoveFile,
    WriteFile,
)


@pytest.fixture(params=[1, 4], ids=["serial", "io4"])
async def committer(request):
    c = GroupCommitter(max_batch=64, io_threads=request.param)
    c.start()
    yield c
    await c.aclose()


def _job(tmp_path, name, data=b"x"):
    (tmp_path / "tmp").mkdir(exist_ok=True)
    (tmp_path / "new").mkdir(exist_ok=True)
    return WriteFile(tmp_path / "tmp" / name, tmp_path / "new" / name, data)


class SyncCounter:
    """Counts file syncs and directory syncs separately (by fstat of the fd)."""

    def __init__(self, monkeypatch):
        self.files = 0
        self.dirs: list[int] = []
        self.lock = threading.Lock()
        real_fsync, real_fdatasync = os.fsync, os.fdatasync

        def counted(real):
            def wrapper(fd):
                is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
                with self.lock:
                    if is_dir:
                        self.dirs.append(os.fstat(fd).st_ino)
                    else:
                        self.files += 1
                return real(fd)

            return wrapper

        monkeypatch.setattr(os, "fsync", counted(real_fsync))
        monkeypatch.setattr(os, "fdatasync", counted(real_fdatasync))


async def test_commit_writes_exact_bytes_and_leaves_no_tmp(committer, tmp_path):
    job = _job(tmp_path, "a", b"hello\r\nworld\r\n")
    await committer.commit(job)
    assert job.final_path.read_bytes() == b"hello\r\nworld\r\n"
    assert list((tmp_path / "tmp").iterdir()) == []
    assert stat.S_IMODE(job.final_path.stat().st_mode) == 0o600


async def test_one_group_syncs_each_file_once_and_directory_once(tmp_path, monkeypatch):
    counter = SyncCounter(monkeypatch)
    c = GroupCommitter(max_batch=100, io_threads=4)
    c.start()
    try:
        jobs = [_job(tmp_path, f"m{i}", b"data %d" % i) for i in range(20)]
        outcomes = await c.commit_many(jobs)
    finally:
        await c.aclose()
    assert outcomes == [None] * 20
    assert counter.files == 20
    new_ino = (tmp_path / "new").stat().st_ino
    assert counter.dirs == [new_ino]  # one directory sync for the whole batch
    assert c.stats.batches == 1 and c.stats.dir_syncs == 1


async def _hold_the_worker(committer, tmp_path):
    """A first job that holds the committer's worker until `release.set()`: jobs queued meanwhile
    form the next batch whatever the machine's thread scheduling. Returns (its task, release)."""
    release, holding = threading.Event(), threading.Event()

    def held(f):
        holding.set()
        release.wait(10)
        f.write(b"held")

    (tmp_path / "tmp").mkdir(exist_ok=True)
    (tmp_path / "new").mkdir(exist_ok=True)
    first = asyncio.ensure_future(committer.commit(WriteFile(tmp_path / "tmp" / "held", tmp_path / "new" / "held", held)))
    assert await asyncio.to_thread(holding.wait, 10)
    return first, release


async def test_concurrent_commits_are_batched(committer, tmp_path):
    # A first job holds the worker until all 200 are queued, so batching does not depend on
    # how the machine schedules threads (the suite runs beside other load).
    # Waits are on state (the worker holding the first job; all 200 queued), never on time.
    first, release = await _hold_the_worker(committer, tmp_path)
    jobs = [_job(tmp_path, f"c{i}", b"%d" % i) for i in range(200)]
    tasks = [asyncio.ensure_future(committer.commit(j)) for j in jobs]
    for _ in range(1000):  # each task queues its job at its first step
        if len(committer._queue) == 200:
            break
        await asyncio.sleep(0)
    assert len(committer._queue) == 200
    release.set()
    await asyncio.gather(first, *tasks)
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted([f"c{i}" for i in range(200)] + ["held"])
    stats = committer.stats
    assert stats.jobs == 201
    assert stats.batches < 200
    assert stats.largest_batch <= committer.max_batch
    # One wake-up of the event loop per batch, however many messages it settled (issue 19).
    assert stats.wakeups == stats.batches


async def test_one_batch_settles_callers_on_two_event_loops_with_one_wakeup_each(tmp_path):
    """Two listener threads' loops (or a loop and a tool's) share a batch: each caller gets its
    own outcome on its own loop, and each loop is woken once for the batch."""
    c = GroupCommitter(max_batch=64, io_threads=4)
    c.start()
    try:
        first, release = await _hold_the_worker(c, tmp_path)
        mine = [asyncio.ensure_future(c.commit_many([_job(tmp_path, f"a{i}")])) for i in range(5)]
        for _ in range(100):
            if len(c._queue) == 5:
                break
            await asyncio.sleep(0)
        other_queued = threading.Event()

        def other_loop():
            async def run():
                tasks = [asyncio.ensure_future(c.commit_many([
                    _job(tmp_path, f"b{i}"),
                    WriteFile(tmp_path / "missing" / f"b{i}", tmp_path / "new" / f"x{i}", b"x")]))
                    for i in range(3)]
                await asyncio.sleep(0)  # each task submits its group at its first step,
                await asyncio.sleep(0)  # and the loop hands this turn's groups over after them
                other_queued.set()
                return await asyncio.gather(*tasks)
            return asyncio.run(run())

        other = asyncio.ensure_future(asyncio.to_thread(other_loop))
        assert await asyncio.to_thread(other_queued.wait, 10)
        assert len(c._queue) == 8
        before = c.stats
        release.set()
        await first
        assert [await m for m in mine] == [[None]] * 5
        theirs = await other
    finally:
        await c.aclose()
    # Each of the other loop's groups: its first file durable, the one without a directory failed.
    assert [[o is None for o in outcome] for outcome in theirs] == [[True, False]] * 3
    after = c.stats
    assert after.batches - before.batches == 2  # the held job's batch, then the eight groups together
    assert after.wakeups - before.wakeups == 1 + 2  # one per loop per batch


async def test_failing_writer_fails_only_its_job(committer, tmp_path):
    def full_disk(fh):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    good1, good2 = _job(tmp_path, "g1"), _job(tmp_path, "g2")
    bad = WriteFile(tmp_path / "tmp" / "bad", tmp_path / "new" / "bad", full_disk)
    outcomes = await committer.commit_many([good1, bad, good2])
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], OSError) and outcomes[1].errno == errno.ENOSPC
    assert good1.final_path.exists() and good2.final_path.exists()
    assert not (tmp_path / "new" / "bad").exists()
    assert not (tmp_path / "tmp" / "bad").exists()  # its partial tmp file was removed
    with pytest.raises(OSError) as info:
        await committer.commit(WriteFile(tmp_path / "tmp" / "b2", tmp_path / "new" / "b2", full_disk))
    assert info.value.errno == errno.ENOSPC


async def test_exclusive_create_refuses_existing_tmp(committer, tmp_path):
    job = _job(tmp_path, "dup")
    job.tmp_path.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        await committer.commit(job)
    assert job.tmp_path.read_bytes() == b"someone else's"


async def test_missing_directory_fails_only_that_job(committer, tmp_path):
    ok = _job(tmp_path, "ok")
    lost = WriteFile(tmp_path / "nope" / "t", tmp_path / "nope" / "f", b"x")
    outcomes = await committer.commit_many([lost, ok])
    assert isinstance(outcomes[0], FileNotFoundError)
    assert outcomes[1] is None and ok.final_path.exists()


async def test_supersede_move_and_remove(committer, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "v1").write_bytes(b"old")
    await committer.commit(WriteFile(a / ".v2.tmp", b / "v2", b"new", supersedes=a / "v1"))
    assert (b / "v2").read_bytes() == b"new" and not (a / "v1").exists()
    await committer.commit(MoveFile(b / "v2", a / "v2"))
    assert (a / "v2").exists() and not (b / "v2").exists()
    await committer.commit(RemoveFile(a / "v2"))
    assert not (a / "v2").exists()
    await committer.commit(RemoveFile(a / "v2"))  # missing_ok by default
    with pytest.raises(FileNotFoundError):
        await committer.commit(RemoveFile(a / "v2", missing_ok=False))


async def test_one_loop_turns_groups_reach_the_worker_with_one_wakeup(tmp_path, monkeypatch):
    """Issue 19: the messages of one event-loop turn are handed to the worker together — one
    notify, one batch — instead of a wake-up of the worker per message."""
    c = GroupCommitter(max_batch=64, io_threads=4)
    c.start()
    notified = []
    real_notify = c._cond.notify
    monkeypatch.setattr(c._cond, "notify", lambda n=1: notified.append(n) or real_notify(n))
    try:
        outcomes = await asyncio.gather(*(c.commit_many([_job(tmp_path, f"t{i}")]) for i in range(20)))
        assert outcomes == [[None]] * 20
        assert len(notified) == 1
        assert c.stats.batches == 1 and c.stats.largest_batch == 20
        assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted(f"t{i}" for i in range(20))
    finally:
        await c.aclose()


async def test_aclose_hands_over_groups_not_yet_given_to_the_worker(tmp_path):
    c = GroupCommitter(max_batch=4)
    c.start()
    pending = [asyncio.ensure_future(c.commit(_job(tmp_path, f"p{i}"))) for i in range(6)]
    await asyncio.sleep(0)  # the groups are submitted; this turn's hand-over has not run yet
    assert len(c._pending) == 6 and not c._queue
    await c.aclose()
    await asyncio.gather(*pending)  # accepted before the close, so durable, not refused
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted(f"p{i}" for i in range(6))


async def test_aclose_drains_and_then_refuses(tmp_path):
    c = GroupCommitter(max_batch=4)
    c.start()
    pending = [asyncio.ensure_future(c.commit(_job(tmp_path, f"d{i}"))) for i in range(30)]
    await asyncio.sleep(0)  # let them enqueue
    await c.aclose()
    await asyncio.gather(*pending)
    assert len(list((tmp_path / "new").iterdir())) == 30
    with pytest.raises(CommitterClosedError):
        await c.commit(_job(tmp_path, "late"))


async def test_commit_before_start_is_refused(tmp_path):
    with pytest.raises(CommitterClosedError):
        await GroupCommitter().commit(_job(tmp_path, "x"))


def test_sizes_must_be_positive():
    with pytest.raises(ValueError, match="max_batch"):
        GroupCommitter(max_batch=0)
    with pytest.raises(ValueError, match="io_threads"):
        GroupCommitter(io_threads=0)


async def test_short_writes_continue_until_every_byte_is_written(committer, tmp_path, monkeypatch):
    # write(2) may write less than asked (signal, quota); the rest must follow, not be dropped.
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:3])))
    job = _job(tmp_path, "short", b"0123456789" * 5)
    await committer.commit(job)
    assert job.final_path.read_bytes() == b"0123456789" * 5


async def test_a_bytes_write_failing_fails_only_its_job_in_a_parallel_batch(committer, tmp_path, monkeypatch):
    real_write = os.write

    def write(fd, data):
        if bytes(data).startswith(b"FULL"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    jobs = [_job(tmp_path, f"p{i}", b"FULL" if i == 3 else b"ok %d" % i) for i in range(8)]
    outcomes = await committer.commit_many(jobs)
    assert [o is None for o in outcomes] == [i != 3 for i in range(8)]
    assert isinstance(outcomes[3], OSError) and outcomes[3].errno == errno.ENOSPC
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == [f"p{i}" for i in range(8) if i != 3]
    assert list((tmp_path / "tmp").iterdir()) == []


async def test_a_kept_file_is_written_over_cut_to_length_synced_and_renamed(committer, tmp_path, monkeypatch):
    """Issue 19: RemoveFile(keep_as) renames instead of unlinking (both directories synced) and
    WriteFile(reuse) writes over that file from its start: the same inode, no old tail left —
    shorter and longer contents, bytes and a writer callback — synced before its rename."""
    (tmp_path / "q").mkdir()
    (tmp_path / "tmp").mkdir()
    (tmp_path / "q" / "old").write_bytes(b"A" * 5000)
    ino = (tmp_path / "q" / "old").stat().st_ino
    counter = SyncCounter(monkeypatch)
    await committer.commit(RemoveFile(tmp_path / "q" / "old", keep_as=tmp_path / "tmp" / "kept"))
    assert not (tmp_path / "q" / "old").exists() and (tmp_path / "tmp" / "kept").stat().st_ino == ino
    assert sorted(counter.dirs) == sorted([(tmp_path / "q").stat().st_ino, (tmp_path / "tmp").stat().st_ino])

    counter.dirs.clear()
    await committer.commit(WriteFile(tmp_path / "tmp" / "kept", tmp_path / "q" / "new", b"short", reuse=True))
    assert (tmp_path / "q" / "new").read_bytes() == b"short" and (tmp_path / "q" / "new").stat().st_ino == ino
    assert counter.files == 1 and counter.dirs == [(tmp_path / "q").stat().st_ino]
    assert list((tmp_path / "tmp").iterdir()) == []

    await committer.commit(RemoveFile(tmp_path / "q" / "new", keep_as=tmp_path / "tmp" / "kept"))
    await committer.commit(WriteFile(tmp_path / "tmp" / "kept", tmp_path / "q" / "w",
                                     lambda fh: fh.write(b"B" * 9000), reuse=True))
    assert (tmp_path / "q" / "w").read_bytes() == b"B" * 9000 and (tmp_path / "q" / "w").stat().st_ino == ino
    await committer.commit(RemoveFile(tmp_path / "q" / "w", keep_as=tmp_path / "tmp" / "kept"))
    await committer.commit(WriteFile(tmp_path / "tmp" / "kept", tmp_path / "q" / "x", lambda fh: fh.write(b"c"),
                                     reuse=True))
    assert (tmp_path / "q" / "x").read_bytes() == b"c"


async def test_a_reused_file_that_is_gone_is_created_and_a_failed_keep_is_an_unlink(committer, tmp_path):
    (tmp_path / "q").mkdir()
    (tmp_path / "tmp").mkdir()
    await committer.commit(WriteFile(tmp_path / "tmp" / "never", tmp_path / "q" / "a", b"a", reuse=True))
    assert (tmp_path / "q" / "a").read_bytes() == b"a"
    # The kept name's directory is missing: the file is unlinked as without keep_as, not left behind.
    await committer.commit(RemoveFile(tmp_path / "q" / "a", keep_as=tmp_path / "gone" / "kept"))
    assert list((tmp_path / "q").iterdir()) == []
    await committer.commit(RemoveFile(tmp_path / "q" / "a", keep_as=tmp_path / "tmp" / "kept"))  # missing_ok
    with pytest.raises(FileNotFoundError):
        await committer.commit(RemoveFile(tmp_path / "q" / "a", missing_ok=False, keep_as=tmp_path / "tmp" / "k"))


async def test_a_reused_write_that_fails_removes_the_kept_file_and_fails_only_its_job(committer, tmp_path):
    (tmp_path / "q").mkdir()
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "kept").write_bytes(b"old content")

    def broken(fh):
        fh.write(b"half")
        raise OSError(errno.EIO, "disk trouble")

    ok = WriteFile(tmp_path / "tmp" / "ok", tmp_path / "q" / "ok", b"fine")
    outcomes = await committer.commit_many([WriteFile(tmp_path / "tmp" / "kept", tmp_path / "q" / "bad", broken,
                                                      reuse=True), ok])
    assert isinstance(outcomes[0], OSError) and outcomes[1] is None
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == ["ok"]
    assert list((tmp_path / "tmp").iterdir()) == []


async def test_a_parallel_batch_is_answered_only_after_every_file_is_synced(tmp_path, monkeypatch):
    """The committer and the I/O threads share a batch's files. No caller may hear of the batch
    (nor any name be published) before every file of it is written and fdatasynced, whichever
    thread wrote it and whenever it ended (issue 19, session 6: the hand-off was reworked and
    measured; this pins what any rework must keep)."""
    counter = SyncCounter(monkeypatch)
    gate, first_written = threading.Event(), threading.Event()
    renamed: list[int] = []
    real_replace = os.replace

    def replace(src, dst):
        renamed.append(counter.files)  # files synced when this name is published
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)

    def writer(i):
        def write(f):
            if i == 0:
                first_written.set()
            else:
                assert gate.wait(10)  # files 1-3 end only when the test opens the gate
            f.write(b"file %d" % i)
        return write

    (tmp_path / "tmp").mkdir()
    (tmp_path / "new").mkdir()
    jobs = [WriteFile(tmp_path / "tmp" / f"g{i}", tmp_path / "new" / f"g{i}", writer(i)) for i in range(4)]
    c = GroupCommitter(max_batch=64, io_threads=4)
    c.start()
    try:
        task = asyncio.ensure_future(c.commit_many(jobs))
        assert await asyncio.to_thread(first_written.wait, 10)
        with pytest.raises(asyncio.TimeoutError):  # three files are still being written (never timing-
            # dependent when correct: the gate stays shut until the test opens it)
            await asyncio.wait_for(asyncio.shield(task), 0.3)
        assert renamed == [] and not task.done()
        gate.set()
        assert await task == [None] * 4
    finally:
        gate.set()
        await c.aclose()
    assert counter.files == 4 and renamed == [4, 4, 4, 4]  # every name published after all 4 syncs
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["g0", "g1", "g2", "g3"]
    assert [(tmp_path / "new" / f"g{i}").read_bytes() for i in range(4)] == [b"file %d" % i for i in range(4)]
    assert c.stats.batches == 1 and c.stats.jobs == 4 and c.stats.failures == 0
