"""DiskFree: MAIL's free-disk check with an "enough" answer reused for a bounded time.

The disk is the one thing the sender can drive (by sending mail), so: a low disk must be refused
at the latest ``interval`` after it got low, a cached "enough" never outlives the bound, and a
"too full" answer or an error is never reused."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from mxgate.queue.spool import DiskFree

MIN = 1000  # bytes
INODES = 64


class FakeDisk:
    def __init__(self, free: int, inodes: int = 10_000, files: int = 100_000) -> None:
        self.free, self.inodes, self.files = free, inodes, files
        self.now = 0.0
        self.reads: list[float] = []  # clock times of each statvfs
        self.fail = False

    def clock(self) -> float:
        return self.now

    def statvfs(self, path):
        if self.fail:
            raise OSError("statvfs failed")
        self.reads.append(self.now)
        return SimpleNamespace(f_bavail=self.free, f_frsize=1, f_files=self.files, f_favail=self.inodes)


def memo(disk: FakeDisk, interval: float = 0.1) -> DiskFree:
    return DiskFree(interval, clock=disk.clock, statvfs=disk.statvfs)


def test_enough_is_reused_only_within_the_interval():
    disk = FakeDisk(free=10 * MIN)
    check = memo(disk)
    assert check.ok("/spool", MIN)
    disk.free = 0  # the disk fills up right after the reading
    disk.now = 0.099
    assert check.ok("/spool", MIN)  # within the bound: the reading of t=0 stands
    assert disk.reads == [0.0]
    disk.now = 0.1
    assert not check.ok("/spool", MIN)  # at the bound: read again, refused
    assert disk.reads == [0.0, 0.1]


def test_low_disk_is_never_reused_and_a_recovery_is_seen_at_once():
    disk = FakeDisk(free=MIN - 1)
    check = memo(disk)
    assert not check.ok("/spool", MIN)
    assert not check.ok("/spool", MIN)
    assert disk.reads == [0.0, 0.0]
    disk.free = 10 * MIN
    assert check.ok("/spool", MIN)


def test_near_the_threshold_every_mail_reads_the_disk():
    disk = FakeDisk(free=2 * MIN - 1)  # enough, but less than twice the threshold
    check = memo(disk)
    assert check.ok("/spool", MIN)
    disk.free = MIN - 1
    assert not check.ok("/spool", MIN)  # same instant: no reuse near the threshold
    assert disk.reads == [0.0, 0.0]


def test_few_inodes_are_not_reused_either():
    disk = FakeDisk(free=10 * MIN, inodes=2 * INODES - 1)
    check = memo(disk)
    assert check.ok("/spool", MIN, INODES)
    disk.inodes = INODES - 1
    assert not check.ok("/spool", MIN, INODES)
    disk.files = 0  # a filesystem without an inode limit
    assert check.ok("/spool", MIN, INODES)


@pytest.mark.parametrize("change", ["path", "bytes", "inodes"])
def test_memo_is_keyed_on_path_and_thresholds(change):
    disk = FakeDisk(free=10 * MIN, inodes=10 * INODES)
    check = memo(disk)
    assert check.ok("/spool", MIN, INODES)
    args = {"path": ("/other", MIN, INODES), "bytes": ("/spool", 100 * MIN, INODES),
            "inodes": ("/spool", MIN, 100 * INODES)}[change]
    expected = change == "path"  # a raised threshold above what is free refuses at once
    assert check.ok(*args) is expected
    assert disk.reads == [0.0, 0.0]


def test_an_error_propagates_and_is_never_a_pass():
    disk = FakeDisk(free=10 * MIN)
    check = memo(disk)
    assert check.ok("/spool", MIN)
    disk.now, disk.fail = 0.2, True
    with pytest.raises(OSError):
        check.ok("/spool", MIN)
    with pytest.raises(OSError):  # the error did not leave the old "enough" behind
        check.ok("/spool", MIN)


@pytest.mark.parametrize("seed", range(20))
def test_random_walk_every_answer_rests_on_a_fresh_enough_reading(seed):
    """Whatever the disk does: a refusal is today's reading, and a pass rests on a reading less
    than ``interval`` old that had at least twice the threshold free (or on today's reading)."""
    rng = random.Random(seed)
    disk = FakeDisk(free=0)
    check = memo(disk, interval=0.1)
    seen: dict[float, int] = {}  # reading time -> free seen then (last reading per instant)
    for _ in range(500):
        disk.now += rng.choice((0.0, 0.001, 0.03, 0.07, 0.1, 0.2))
        disk.free = rng.choice((0, MIN - 1, MIN, 2 * MIN - 1, 2 * MIN, 50 * MIN))
        before = len(disk.reads)
        answer = check.ok("/spool", MIN)
        if len(disk.reads) > before:
            seen[disk.now] = disk.free
            assert answer == (disk.free >= MIN)
        else:
            last = disk.reads[-1]
            assert answer and disk.now - last < 0.1 and seen[last] >= 2 * MIN
