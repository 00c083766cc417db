"""Mail the admin can act on: quarantine (quarantine/store.py) and the gateway queue (queue/spool.py).

Owns: choosing how to reach each store from the admin centre. Quarantine release delivers
through the node's own group committer and Maildir (the same path the mailbox role uses).
The queue (every process's directory) is read from the in-process gateway's index for its own
directory, else read-only from the queue files; retry and delete are requests to the process
that owns the entry's directory (`<dir>/requests/<id>.<action>`, the queue CLI's channel), so
only one process ever rewrites a queue file. Must not know HTTP.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mxgate.durable import private_dir
from mxgate.errors import NotFoundError, PolicyFormatError
from mxgate.quarantine.store import QuarantineStore
from mxgate.queue.runner import REQUESTS_DIR
from mxgate.queue.spool import LIVE_QUEUES, QUEUE_ID_RE, QueueEntry, entries_on_disk

_QID = re.compile(r"^[0-9a-f]{16}$")


# --- quarantine --------------------------------------------------------------------------------

def quarantine_store(st) -> QuarantineStore:
    return QuarantineStore(st.engine, node=st.node_name)


def check_qid(qid: str) -> str:
    if not _QID.match(qid):
        raise NotFoundError(f"quarantined message {qid} does not exist")
    return qid


async def release(st, qid: str, actor: str) -> list[str]:
    """Deliver into every recipient's inbox now; the trace gets a `Release` event."""
    import asyncio

    from mxgate.delivery.maildir import Maildir

    store = quarantine_store(st)
    check_qid(qid)
    if st.node is not None and st.node.committer is not None:
        maildir = Maildir(st.home.maildir, st.node.committer, hostname=st.node.settings.mailbox.hostname)
        internal = getattr(st.node, "internal", None)  # forwarding and lists, as for delivered mail
        paths = await store.release_into(qid, maildir, actor=actor, trace=st.trace,
                                         deliver=internal.release if internal is not None else None)
    else:  # no running node (API unit tests): the CLI's own path in a worker thread
        paths = await asyncio.to_thread(store.release, qid, st.home.maildir, actor=actor, trace=st.trace)
    return [str(p) for p in paths]


# --- gateway queue -------------------------------------------------------------------------------
# Every process of a gateway node queues into its own directory (queue/spool.py "one spool per
# process"); this view covers all of them. Process 0's own spool is read from its index, the
# others' from their files; actions are request files in the directory that holds the entry.

def _services(st):
    role = st.role("gateway")
    return getattr(role, "sv", None)


def spool_roots(st) -> list[Path]:
    """The gateway queue's directory in every process of this node (the first one's even before it exists)."""
    from mxgate.queue.spool import process_spools

    found = [path for _, path in process_spools(st.home.spool, "gateway")]
    return found or [Path(st.home.spool) / "gateway"]


def _located(st) -> list[tuple[Path, QueueEntry]]:
    sv = _services(st)
    own = Path(sv.spool.root) if sv is not None else None
    from mxgate.queue.dbspool import DbSpool

    if sv is not None and isinstance(sv.spool, DbSpool):  # the database queue: every node's rows
        return [(own, e) for e in sv.spool.list()]
    found = []
    for root in spool_roots(st):
        entries = sv.spool.list() if root == own else entries_on_disk(root)
        found += [(root, e) for e in entries]
    return sorted(found, key=lambda p: (p[1].arrival, p[1].queue_id))


def queue_entries(st) -> list[QueueEntry]:
    return [e for _, e in _located(st)]


def queue_rows(st) -> list[dict[str, Any]]:
    """The queue for the API and the page: each entry with the directory (process) holding it."""
    return [entry_dict(e, root) for root, e in _located(st)]


def queue_depths(st) -> dict[str, int]:
    counts = {q: 0 for q in LIVE_QUEUES}
    for e in queue_entries(st):
        counts[e.queue] = counts.get(e.queue, 0) + 1
    return counts


def entry_dict(e: QueueEntry, root: Path | None = None) -> dict[str, Any]:
    return {"queue_id": e.queue_id, "spool": root.name if root is not None else "", "queue": e.queue,
            "sender": e.sender, "arrival": e.arrival,
            "attempts": e.attempts, "next_attempt": e.next_attempt, "last_error": e.last_error, "size": e.size,
            "trace_id": e.meta.get("trace_id", ""),
            "recipients": [{"address": r.address, "state": r.state.value, "status": r.status, "error": r.error}
                           for r in e.recipients]}


def request_action(st, queue_id: str, action: str) -> None:
    """Ask the process owning the entry's directory to retry or delete it at its next scan (≤ 1 s)."""
    if action not in ("retry", "delete"):
        raise PolicyFormatError(f"queue action must be retry or delete, got {action!r}")
    root = next((r for r, e in _located(st) if e.queue_id == queue_id), None) if QUEUE_ID_RE.match(queue_id) else None
    if root is None:
        raise NotFoundError(f"queue entry {queue_id} does not exist")
    folder = root / REQUESTS_DIR
    private_dir(folder)
    (folder / f"{queue_id}.{action}").touch()
    sv = _services(st)
    if sv is not None and Path(sv.spool.root) == root:
        sv.runner.kick()
