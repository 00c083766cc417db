"""Maildir delivery: one Maildir per mailbox address, made durable through the group committer.

Owns: the on-disk layout ``<root>/<address>/{tmp,new,cur}`` with Maildir++ folders
(``<root>/<address>/.Junk/{tmp,new,cur}``), turning an address into a safe directory name, the
unique file names, and the delivery protocol below.
Must not know: who may send to whom (policy), aliases and routing (``delivery/router.py``),
SMTP replies. The caller answers 250 only after ``deliver`` returns.

Delivery protocol (https://cr.yp.to/proto/maildir.html, RFC 5321 §6.1):
``tmp/<unique>`` created with O_CREAT|O_EXCL|O_WRONLY, written, fsynced, renamed into
``new/<unique>``, then ``new/`` fsynced — the last two batched by :class:`GroupCommitter`, so a
batch of deliveries into one mailbox costs one directory fsync. Directories are created once
per process and their parents fsynced, so a new mailbox cannot vanish after a crash either.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mxgate.durable import GroupCommitter, WriteFile, sync_directory

DIR_MODE = 0o700
SUBDIRS = ("tmp", "new", "cur")  # Maildir spec
JUNK_FOLDER = "Junk"
MAX_NAME_BYTES = 255  # NAME_MAX on Linux filesystems
# Maildir++ folder names: dot-separated levels; no "/", no empty level, no leading dot.
_FOLDER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _\-]*(\.[A-Za-z0-9][A-Za-z0-9 _\-]*)*$")
_ESCAPES = {"%": "%25", "/": "%2F", "\\": "%5C"}
_counter = itertools.count(1)
# This process's id for new names, read once (getpid is a system call; one per message was ~1% of
# the mailbox's loop in bench P3) and read again in a forked child, whose names must differ.
_pid = os.getpid()


def _read_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_read_pid)
# `directory / name` without parsing `name` again (pathlib's public join re-parses both sides:
# two joins were ~1.3% of the mailbox's event-loop samples in bench P1, issue 19). Only for the
# names `new_name` makes: one component, no separator, never "." or "..".
_child_relpath = getattr(Path, "_make_child_relpath", None)


def _child(directory: Path, name: str) -> Path:
    return _child_relpath(directory, name) if _child_relpath is not None else directory / name


class InvalidMailboxError(ValueError):
    """The address or folder cannot name a mailbox directory safely."""


@dataclass(frozen=True)
class DeliveryResult:
    """Outcome of one recipient in ``deliver_many``: ``path`` when durable, else ``error``."""

    address: str
    folder: str | None
    path: Path | None
    error: BaseException | None

    @property
    def ok(self) -> bool:
        return self.error is None


def mailbox_dirname(address: str) -> str:
    """Map an address to one path component: lower-cased, never ``.``/``..``, no separators.

    ``/``, ``\\`` and ``%`` are percent-escaped (RFC 5321 local parts may contain ``/``) and a
    leading dot becomes ``%2E`` so it can neither traverse nor hide; control characters and NUL
    are refused outright since no acceptable envelope address carries them.
    """
    name = address.strip().lower()
    if not name:
        raise InvalidMailboxError("empty mailbox address")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise InvalidMailboxError("control character in mailbox address")
    name = "".join(_ESCAPES.get(c, c) for c in name)
    if name.startswith("."):
        name = "%2E" + name[1:]
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise InvalidMailboxError("mailbox address too long for a directory name")
    return name


def folder_dirname(folder: str | None) -> str | None:
    """Maildir++ directory for a folder (``Junk`` -> ``.Junk``); None/INBOX is the top level."""
    if folder is None or folder.upper() == "INBOX":
        return None
    if not _FOLDER_RE.match(folder) or len(folder.encode("utf-8")) + 1 > MAX_NAME_BYTES:
        raise InvalidMailboxError(f"invalid folder name {folder!r}")
    return "." + folder


def _host_part() -> str:
    # The Maildir spec escapes "/" and ":" in the host part so names stay one component and
    # the ":2," info suffix stays unambiguous.
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072") or "localhost"


_PATHS_KEPT = 10_000  # recently used mailbox paths remembered; the cache is emptied when full


class Maildir:
    """A tree of Maildirs under ``root``, one per lower-cased address."""

    def __init__(self, root: str | os.PathLike[str], committer: GroupCommitter, *, hostname: str | None = None) -> None:
        self.root = Path(root)
        self.committer = committer
        self._host = hostname.replace("/", r"\057").replace(":", r"\072") if hostname else _host_part()
        self._ready: set[Path] = set()  # Maildirs known to exist durably in this process
        # Escaped names are pure functions of (address, folder), computed once per mailbox
        # (pathlib and the escaping were ~2% of the mailbox's CPU per message in bench P1).
        self._paths: dict[tuple[str, str | None], Path] = {}
        self._subdirs: dict[Path, tuple[Path, Path]] = {}  # directory -> (tmp, new), joined once

    # -- layout ----------------------------------------------------------------------------

    def path_for(self, address: str, folder: str | None = None) -> Path:
        """The Maildir directory (holding tmp/new/cur) for an address and optional folder."""
        key = (address, folder)
        path = self._paths.get(key)
        if path is None:
            if len(self._paths) >= _PATHS_KEPT:
                self._paths.clear()
            path = self._paths[key] = self._path_for(address, folder)
        return path

    def _path_for(self, address: str, folder: str | None) -> Path:
        mailbox = self.root / mailbox_dirname(address)
        if mailbox.parent != self.root:  # belt and braces: the escaping guarantees this
            raise InvalidMailboxError("mailbox path escapes the Maildir root")
        sub = folder_dirname(folder)
        return mailbox / sub if sub else mailbox

    def ensure(self, address: str, folder: str | None = None) -> Path:
        """Create the Maildir (and the folder) durably if missing; blocking, returns its path."""
        target = self.path_for(address, folder)
        if target in self._ready:
            return target
        mailbox = self.path_for(address)
        self.root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        _make_maildir(mailbox, self.root)
        if target != mailbox:
            _make_maildir(target, mailbox)
            marker = target / "maildirfolder"  # Maildir++: marks a folder, not a mailbox
            if not marker.exists():
                marker.touch(mode=0o600)
                sync_directory(target)
        self._ready.add(target)
        return target

    def new_name(self, size: int) -> str:
        """Unique file name ``<sec>.M<usec>P<pid>Q<n>.<host>,S=<size>`` (Maildir / Maildir++)."""
        now = time.time()
        sec = int(now)
        usec = int((now - sec) * 1_000_000)
        # Zero-padded so names sort in arrival order (readers may list them; the spec allows it).
        return f"{sec}.M{usec:06d}P{_pid}Q{next(_counter)}.{self._host},S={size}"

    # -- delivery --------------------------------------------------------------------------

    async def _ensure_async(self, address: str, folder: str | None) -> Path:
        target = self.path_for(address, folder)
        if target in self._ready:
            return target
        return await asyncio.to_thread(self.ensure, address, folder)

    def _job(self, directory: Path, data: bytes) -> WriteFile:
        name = self.new_name(len(data))
        subdirs = self._subdirs.get(directory)
        if subdirs is None:
            subdirs = self._subdirs[directory] = (directory / "tmp", directory / "new")
        return WriteFile(tmp_path=_child(subdirs[0], name), final_path=_child(subdirs[1], name), content=data)

    async def deliver(self, address: str, data: bytes, *, folder: str | None = None) -> Path:
        """Store one message durably; returns its path in ``new/``. Raises on failure."""
        directory = await self._ensure_async(address, folder)
        job = self._job(directory, data)
        try:
            await self.committer.commit(job)
        except FileNotFoundError:
            self._ready.discard(directory)  # removed behind our back: recreate on the retry
            raise
        return job.final_path

    async def deliver_many(self, items: Iterable[tuple[str, bytes, str | None]]) -> list[DeliveryResult]:
        """Deliver to several mailboxes in one commit batch; one result per item, in order.

        A recipient that fails (bad name, full disk, broken directory) is reported as such and
        never hides the others.
        """
        items = list(items)
        results: list[DeliveryResult | None] = [None] * len(items)
        jobs: list[WriteFile] = []
        slots: list[int] = []
        for i, (address, data, folder) in enumerate(items):
            try:
                directory = self.path_for(address, folder)  # _ensure_async inline: no coroutine per copy
                if directory not in self._ready:
                    directory = await asyncio.to_thread(self.ensure, address, folder)
            except (OSError, InvalidMailboxError) as exc:
                results[i] = DeliveryResult(address, folder, None, exc)
                continue
            jobs.append(self._job(directory, data))
            slots.append(i)
        outcomes = await self.committer.commit_many(jobs)
        for i, job, outcome in zip(slots, jobs, outcomes):
            address, _, folder = items[i]
            path = None if outcome is not None else job.final_path
            if isinstance(outcome, FileNotFoundError):
                self._ready.discard(job.final_path.parent.parent)
            results[i] = DeliveryResult(address, folder, path, outcome)
        return [r for r in results if r is not None]

    # -- reading (tests, CLI) --------------------------------------------------------------

    def list_messages(self, address: str, folder: str | None = None) -> list[Path]:
        """Messages in ``new/`` and ``cur/``, sorted by file name (stable for tests and listings)."""
        directory = self.path_for(address, folder)
        found: list[Path] = []
        for sub in ("new", "cur"):
            try:
                found.extend(p for p in (directory / sub).iterdir() if not p.name.startswith("."))
            except FileNotFoundError:
                continue
        return sorted(found, key=lambda p: p.name)


def _make_maildir(directory: Path, parent: Path) -> None:
    created = False
    if not directory.is_dir():
        directory.mkdir(mode=DIR_MODE, exist_ok=True)
        created = True
    for sub in SUBDIRS:
        path = directory / sub
        if not path.is_dir():
            path.mkdir(mode=DIR_MODE, exist_ok=True)
            created = True
    if created:
        # New names must be durable before a message is acknowledged inside them.
        sync_directory(directory)
        sync_directory(parent)
