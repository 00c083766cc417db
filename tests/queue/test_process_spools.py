"""One spool directory per process (issue 19): naming, adoption of a directory no process runs
any more (same queue ids, each file in exactly one spool, even across a crash), and refusal
while its owner still runs. Real directories and a real group committer."""

from __future__ import annotations

import asyncio
import os

import pytest

from mxgate.errors import ConfigError
from mxgate.queue import spool as spool_module
from mxgate.queue.spool import (DiskSpool, entries_on_disk, lock_spool, open_process_spool, process_spool,
                                process_spools, spool_owned)

MSG = b"From: a@fabrikam.test\r\nSubject: s\r\n\r\nbody\r\n"


def test_each_process_has_its_own_directory_and_readers_find_them_all(tmp_path):
    assert process_spool(tmp_path, "gateway", 0) == tmp_path / "gateway"
    assert process_spool(tmp_path, "gateway", 3) == tmp_path / "gateway-w3"
    for name in ("gateway", "gateway-w1", "gateway-w10", "gateway-w2", "gateway-outbound", "gateway-outbound-w1",
                 "gateway-wx", "gateway-w0", "gateway-w1.bak", "outbound-w1"):
        (tmp_path / name).mkdir()
    (tmp_path / "gateway-w7").write_text("a file, not a spool")
    assert process_spools(tmp_path, "gateway") == [(0, tmp_path / "gateway"), (1, tmp_path / "gateway-w1"),
                                                    (2, tmp_path / "gateway-w2"), (10, tmp_path / "gateway-w10")]
    assert process_spools(tmp_path, "gateway-outbound") == [(0, tmp_path / "gateway-outbound"),
                                                             (1, tmp_path / "gateway-outbound-w1")]
    assert process_spools(tmp_path, "outbound") == [(1, tmp_path / "outbound-w1")]
    assert process_spools(tmp_path / "missing", "gateway") == []


async def _fill(root, committer, subjects):
    spool = await asyncio.to_thread(DiskSpool.open, root, committer)
    return spool, [await spool.enqueue("s@fabrikam.test", ["alice@contoso.test"], MSG + s.encode(), {"n": s})
                   for s in subjects]


async def test_process_0_adopts_the_spool_of_a_worker_the_node_no_longer_runs(tmp_path, committer):
    stray, entries = await _fill(tmp_path / "gateway-w1", committer, ["a", "b", "c", "d"])
    held = await stray.hold(entries[1])
    active = await stray.claim(entries[2])  # in flight when that worker stopped
    deferred = await stray.defer(entries[3], entries[3].pending, "451 later", 10.0)
    (tmp_path / "gateway-w1" / "corrupt" / "incoming.X.1").write_bytes(b"kept for inspection")
    _, own = await _fill(tmp_path / "gateway", committer, ["own"])
    (tmp_path / "gateway-w2").mkdir()  # another stray one, empty

    spool, lock_fd = await open_process_spool(tmp_path, "gateway", 0, 1, committer)  # the node now runs one process
    try:
        got = {e.queue_id: e for e in spool.list()}
        assert set(got) == {e.queue_id for e in entries} | {own[0].queue_id}  # the same queue ids
        assert got[held.queue_id].queue == "hold"
        assert got[active.queue_id].queue == "deferred"  # recovered before the move: tried again
        assert got[deferred.queue_id].attempts == 1 and got[deferred.queue_id].last_error == "451 later"
        assert await spool.open_message(got[entries[0].queue_id]) == MSG + b"a"
        assert entries_on_disk(tmp_path / "gateway-w1") == []
        assert (tmp_path / "gateway" / "corrupt" / "gateway-w1.incoming.X.1").read_bytes() == b"kept for inspection"
        assert spool.due(1e12)  # the runner finds them at its next scan
        assert spool.strays == []
    finally:
        os.close(lock_fd)
    # A worker index the node still runs is left to its worker.
    _, kept = await _fill(tmp_path / "gateway-w1", committer, ["w1"])
    spool, lock_fd = await open_process_spool(tmp_path, "gateway", 0, 2, committer)
    os.close(lock_fd)
    assert [e.queue_id for e in entries_on_disk(tmp_path / "gateway-w1")] == [kept[0].queue_id]
    assert kept[0].queue_id not in {e.queue_id for e in spool.list()}


async def test_a_crash_during_adoption_leaves_each_entry_in_exactly_one_spool(tmp_path, committer):
    _, entries = await _fill(tmp_path / "gateway-w1", committer, ["a", "b", "c"])
    own = await asyncio.to_thread(DiskSpool.open, tmp_path / "gateway", committer)
    first = entries[0]
    # The crash came after the first rename: one file moved, two not.
    os.rename(tmp_path / "gateway-w1" / "incoming" / first.queue_id, tmp_path / "gateway" / "incoming" / first.queue_id)
    reopened, lock_fd = await open_process_spool(tmp_path, "gateway", 0, 1, committer)
    os.close(lock_fd)
    assert sorted(e.queue_id for e in reopened.list()) == sorted(e.queue_id for e in entries)
    assert entries_on_disk(tmp_path / "gateway-w1") == []
    assert own.root == reopened.root


async def test_a_directory_whose_worker_still_runs_is_refused_then_adopted_once_free(tmp_path, committer, monkeypatch):
    _, entries = await _fill(tmp_path / "gateway-w1", committer, ["late"])
    still_running = lock_spool(tmp_path / "gateway-w1")  # its old worker is still stopping
    assert spool_owned(tmp_path / "gateway-w1")
    spool, lock_fd = await open_process_spool(tmp_path, "gateway", 0, 1, committer)
    try:
        with pytest.raises(ConfigError, match="another running mxgate process owns this queue"):
            await spool.adopt(tmp_path / "gateway-w1")
        assert spool.strays == [tmp_path / "gateway-w1"] and spool.list() == []
        monkeypatch.setattr(spool_module, "ADOPT_RETRY", 0.01)
        spool.start()
        os.close(still_running)
        for _ in range(1000):  # wait on the state, at most ~10 s
            if not spool.strays:
                break
            await asyncio.sleep(0.01)
        assert [e.queue_id for e in spool.list()] == [entries[0].queue_id]
        assert entries_on_disk(tmp_path / "gateway-w1") == []
        await spool.stop()
    finally:
        os.close(lock_fd)


async def test_a_worker_never_adopts_and_two_processes_never_share_a_directory(tmp_path, committer):
    _, entries = await _fill(tmp_path / "gateway-w3", committer, ["x"])
    spool, fd1 = await open_process_spool(tmp_path, "gateway", 1, 2, committer)  # worker 1: its own only
    try:
        assert spool.root == tmp_path / "gateway-w1" and spool.list() == []
        assert [e.queue_id for e in entries_on_disk(tmp_path / "gateway-w3")] == [entries[0].queue_id]
        with pytest.raises(ConfigError):
            await open_process_spool(tmp_path, "gateway", 1, 2, committer)
    finally:
        os.close(fd1)


async def test_the_first_process_reports_every_workers_queue_depth_in_metrics(tmp_path, committer):
    from mxgate import metrics

    _, entries = await _fill(tmp_path / "gateway-w1", committer, ["a", "b"])
    spool, lock_fd = await open_process_spool(tmp_path, "gateway", 0, 2, committer)  # worker 1 still runs
    try:
        spool.start()
        text = metrics.render()[0].decode()
        assert 'mxgate_queue_depth{queue="incoming",spool="gateway-w1"} 2.0' in text
        assert 'mxgate_queue_oldest_seconds{spool="gateway-w1"}' in text
        await spool.stop()
        assert "gateway-w1" not in metrics._spools  # a stopped node stops reporting it
    finally:
        os.close(lock_fd)
