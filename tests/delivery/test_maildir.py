"""Maildir delivery: layout, exact bytes, no tmp leftovers, batching, isolation, safe names."""

from __future__ import annotations

import asyncio
import os
import re

import pytest

from mxgate.durable import GroupCommitter
from mxgate.delivery.maildir import (
    InvalidMailboxError,
    Maildir,
    folder_dirname,
    mailbox_dirname,
)

MESSAGE = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody line\r\n"


@pytest.fixture
async def maildir(tmp_path):
    c = GroupCommitter(max_batch=64)
    c.start()
    yield Maildir(tmp_path / "mail", c, hostname="mx1.test")
    await c.aclose()


async def test_deliver_writes_exact_bytes_into_new(maildir, tmp_path):
    path = await maildir.deliver("Alice@Contoso.TEST", MESSAGE)
    box = tmp_path / "mail" / "alice@contoso.test"
    assert path.parent == box / "new"
    assert path.read_bytes() == MESSAGE
    assert list((box / "tmp").iterdir()) == []
    assert (box / "cur").is_dir()
    assert re.fullmatch(rf"\d+\.M\d+P\d+Q\d+\.mx1\.test,S={len(MESSAGE)}", path.name)
    assert maildir.list_messages("alice@contoso.test") == [path]


async def test_junk_folder_is_maildirplusplus(maildir, tmp_path):
    path = await maildir.deliver("bob@contoso.test", MESSAGE, folder="Junk")
    folder = tmp_path / "mail" / "bob@contoso.test" / ".Junk"
    assert path.parent == folder / "new"
    assert (folder / "maildirfolder").exists()
    assert maildir.list_messages("bob@contoso.test") == []
    assert maildir.list_messages("bob@contoso.test", "Junk") == [path]
    assert maildir.list_messages("bob@contoso.test", "INBOX") == []


async def test_concurrent_deliveries_all_land_in_fewer_batches(maildir):
    before = maildir.committer.stats.batches
    rcpts = [f"user{i % 7}@contoso.test" for i in range(200)]
    paths = await asyncio.gather(*(maildir.deliver(r, MESSAGE + b"%d\r\n" % i) for i, r in enumerate(rcpts)))
    assert len(set(paths)) == 200
    assert sum(len(maildir.list_messages(f"user{k}@contoso.test")) for k in range(7)) == 200
    assert sorted(p.read_bytes() for p in paths) == sorted(MESSAGE + b"%d\r\n" % i for i in range(200))
    assert maildir.committer.stats.batches - before < 200


async def test_deliver_many_reports_each_recipient(maildir, tmp_path):
    maildir.ensure("broken@contoso.test")
    tmpdir = tmp_path / "mail" / "broken@contoso.test" / "tmp"
    tmpdir.rmdir()
    tmpdir.write_bytes(b"")  # tmp/ is now a file: writing there fails with ENOTDIR
    results = await maildir.deliver_many(
        [
            ("ok1@contoso.test", MESSAGE, None),
            ("broken@contoso.test", MESSAGE, None),
            ("../etc@contoso.test\x00", MESSAGE, None),
            ("ok2@contoso.test", MESSAGE, "Junk"),
        ]
    )
    assert [r.ok for r in results] == [True, False, False, True]
    assert isinstance(results[1].error, NotADirectoryError)
    assert isinstance(results[2].error, InvalidMailboxError)
    assert results[0].path.read_bytes() == MESSAGE
    assert results[3].path.parent.parent.name == ".Junk"
    assert maildir.list_messages("broken@contoso.test") == []


async def test_single_delivery_failure_raises(maildir, tmp_path):
    maildir.ensure("gone@contoso.test")
    (tmp_path / "mail" / "gone@contoso.test" / "new").rmdir()
    with pytest.raises(FileNotFoundError):
        await maildir.deliver("gone@contoso.test", MESSAGE)
    assert list((tmp_path / "mail" / "gone@contoso.test" / "tmp").iterdir()) == []
    # The SMTP client retries after the 4xx: the Maildir is recreated, not failed forever.
    path = await maildir.deliver("gone@contoso.test", MESSAGE)
    assert path.read_bytes() == MESSAGE


@pytest.mark.parametrize(
    "address",
    ["../../etc/passwd", "..", ".", "a/../../b", "/abs@x", ".hidden@x", "..@x", "a\\..\\b"],
)
def test_traversal_attempts_stay_inside_root(maildir, tmp_path, address):
    path = maildir.path_for(address)
    assert path.parent == tmp_path / "mail"
    assert "/" not in path.name and not path.name.startswith(".")
    assert path.resolve().parent == (tmp_path / "mail").resolve()


@pytest.mark.parametrize("address", ["", "   ", "a\x00b@x", "a\r\nb@x", "x" * 300 + "@x"])
def test_unusable_addresses_are_refused(address):
    with pytest.raises(InvalidMailboxError):
        mailbox_dirname(address)


def test_escaping_is_injective_for_separator_lookalikes():
    names = {mailbox_dirname(a) for a in ["a/b@x", "a%2Fb@x", "a\\b@x", ".a@x", "%2Ea@x"]}
    assert len(names) == 5


@pytest.mark.parametrize("folder", ["../x", ".Junk", "a/b", "", "Junk.", "a..b", "x\x00"])
def test_bad_folder_names_are_refused(folder):
    with pytest.raises(InvalidMailboxError):
        folder_dirname(folder)


def test_folder_names():
    assert folder_dirname(None) is None
    assert folder_dirname("inbox") is None
    assert folder_dirname("Junk") == ".Junk"
    assert folder_dirname("Archive.2024") == ".Archive.2024"


async def test_delivery_fsyncs_file_and_directory(maildir, tmp_path, monkeypatch):
    import os
    import stat

    maildir.ensure("sync@contoso.test")
    seen = {"file": 0, "dir": 0}
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def count(real):
        def wrapper(fd):
            seen["dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"] += 1
            return real(fd)

        return wrapper

    monkeypatch.setattr(os, "fsync", count(real_fsync))
    monkeypatch.setattr(os, "fdatasync", count(real_fdatasync))
    results = await maildir.deliver_many([("sync@contoso.test", MESSAGE, None)] * 5)
    assert all(r.ok for r in results)
    assert seen == {"file": 5, "dir": 1}


def test_a_forked_child_names_files_with_its_own_pid():
    """new_name reads the pid once per process (no getpid per message): a child forked after the
    parent named files must not put the parent's pid in its names (two processes, same second,
    same counter value would collide)."""
    from mxgate.delivery.maildir import Maildir

    md = Maildir.__new__(Maildir)
    md._host = "h"
    assert f"P{os.getpid()}Q" in md.new_name(1)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its name and its pid, then leave without pytest's cleanup
        try:
            os.write(write_end, f"{md.new_name(1)} {os.getpid()}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        name, child = pipe.read().decode().split()
    os.waitpid(pid, 0)
    assert f"P{child}Q" in name and child != str(os.getpid())
    assert f"P{os.getpid()}Q" in md.new_name(1)


def test_names_sort_in_arrival_order():
    """Zero-padded microseconds: lexical order of names is arrival order within a process."""
    import re

    from mxgate.delivery.maildir import Maildir

    md = Maildir.__new__(Maildir)
    md._host = "h"
    names = [md.new_name(1) for _ in range(200)]
    assert all(re.match(r"^\d+\.M\d{6}P\d+Q\d+\.h,S=1$", n) for n in names)
    keys = [(int(n.split(".")[0]), n.split(".M")[1][:6]) for n in names]
    assert sorted(names) == [n for _, n in sorted(zip(keys, names))]
