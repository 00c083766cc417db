"""Mail the admin can act on: quarantine (quarantine/store.py) and the gateway queue (queue/spool.py).

Owns: choosing how to reach each store from the admin centre. Quarantine release delivers
through the node's own group committer and Maildir (the same path the mailbox role uses).
The queue is read from the in-process gateway's index when this node runs the gateway, else
read-only from the queue files; retry and delete are requests to the gateway that owns the
spool (`<spool>/requests/<id>.<action>`, the queue CLI's channel), so only one process ever
rewrites queue files. Must not know HTTP.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mxgate.durable import private_dir
from mxgate.errors import NotFoundError, PolicyFormatError
from mxgate.quarantine.store import QuarantineStore
from mxgate.queue.runner import REQUESTS_DIR
from mxgate.queue.spool import LIVE_QUEUES, QUEUE_ID_RE, QueueEntry, SpoolError, parse_queue_file

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

def _services(st):
    role = st.role("gateway")
    return getattr(role, "sv", None)


def spool_root(st) -> Path:
    sv = _services(st)
    return Path(sv.spool.root) if sv is not None else Path(st.home.spool) / "gateway"


def queue_entries(st) -> list[QueueEntry]:
    sv = _services(st)
    if sv is not None:
        return sv.spool.list()
    entries = []
    root = spool_root(st)
    for queue in LIVE_QUEUES:
        try:
            names = os.listdir(root / queue)
        except FileNotFoundError:
            continue
        for name in names:
            try:
                entries.append(parse_queue_file((root / queue / name).read_bytes(), queue, name))
            except (OSError, SpoolError):  # being rewritten right now, or corrupt: skip in a listing
                continue
    return sorted(entries, key=lambda e: (e.arrival, e.queue_id))


def queue_depths(st) -> dict[str, int]:
    counts = {q: 0 for q in LIVE_QUEUES}
    for e in queue_entries(st):
        counts[e.queue] = counts.get(e.queue, 0) + 1
    return counts


def entry_dict(e: QueueEntry) -> dict[str, Any]:
    return {"queue_id": e.queue_id, "queue": e.queue, "sender": e.sender, "arrival": e.arrival,
            "attempts": e.attempts, "next_attempt": e.next_attempt, "last_error": e.last_error, "size": e.size,
            "trace_id": e.meta.get("trace_id", ""),
            "recipients": [{"address": r.address, "state": r.state.value, "status": r.status, "error": r.error}
                           for r in e.recipients]}


def request_action(st, queue_id: str, action: str) -> None:
    """Ask the gateway owning the spool to retry or delete an entry at its next scan (≤ 1 s)."""
    if action not in ("retry", "delete"):
        raise PolicyFormatError(f"queue action must be retry or delete, got {action!r}")
    if not QUEUE_ID_RE.match(queue_id) or not any(e.queue_id == queue_id for e in queue_entries(st)):
        raise NotFoundError(f"queue entry {queue_id} does not exist")
    folder = spool_root(st) / REQUESTS_DIR
    private_dir(folder)
    (folder / f"{queue_id}.{action}").touch()
    sv = _services(st)
    if sv is not None:
        sv.runner.kick()
