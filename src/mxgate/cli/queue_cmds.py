"""`mxgate queue list|show|retry|delete|flush` and `mxgate gateway arc-dns`.

Owns: the admin's view of a queue across every process of the node: each process keeps its own
directory (`spool/<queue>` for the first, `spool/<queue>-w<N>` for worker N; queue/spool.py
"one spool per process"), and these commands list and act on all of them. Reading never changes
a spool (files are parsed in place, no recovery runs). Changes go to the running process that
owns the entry's directory as request files it applies on its next scan (`<dir>/requests/`),
because only that process may rewrite its queue; when no process holds a directory's lock, the
command takes it and changes the directory itself.
Must not know: SMTP or relaying.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

from mxgate.cli.common import engine, fail, handle_errors, home, out, print_json, print_table
from mxgate.wording import count

REQUEST_WAIT = 5.0  # seconds to wait for a running gateway to take a request


SPOOLS = {
    "gateway": "the gateway's inbound queue (to the mailbox servers)",
    "gateway-outbound": "the gateway's outbound queue (to the Internet, by MX)",
    "outbound": "a mailbox node's outbound queue (to the outbound connector's smart host)",
}
_selected = {"spool": "gateway"}


def _select(spool: str = typer.Option("gateway", "--spool",
                                      help="which queue: " + "; ".join(f"{k}: {v}" for k, v in SPOOLS.items()))) -> None:
    if spool not in SPOOLS:
        raise typer.BadParameter(f"unknown queue {spool!r} (one of {', '.join(SPOOLS)})", param_hint="--spool")
    _selected["spool"] = spool


def register(app: typer.Typer) -> None:
    q = typer.Typer(help="The durable delivery queues (gateway by default; --spool for the others).",
                    no_args_is_help=True, callback=_select)
    q.command("list")(queue_list)
    q.command("show")(queue_show)
    q.command("retry")(queue_retry)
    q.command("delete")(queue_delete)
    q.command("flush")(queue_flush)
    app.add_typer(q, name="queue")
    g = typer.Typer(help="Gateway role helpers.", no_args_is_help=True)
    g.command("arc-dns")(arc_dns)
    app.add_typer(g, name="gateway")


def _roots() -> list[Path]:
    """Every process's directory of the selected queue (queue/spool.py process_spools)."""
    from mxgate.queue.spool import process_spools

    return [path for _, path in process_spools(home(read=True).spool, _selected["spool"])]


def _database_queue():
    """The shared queue of `[gateway] queue = "database"` (every node sees the same rows), or None."""
    from mxgate.cli.common import engine, settings

    if settings().gateway.queue != "database" or _selected["spool"] != "gateway":
        return None
    from mxgate.queue.dbspool import DbSpool

    return DbSpool(engine(read=True), "cli", home(read=True).spool / "gateway")


def _entries() -> list[tuple[Path | None, object]]:
    """(directory holding it, entry) for every queued message, oldest first; None = the database."""
    from mxgate.queue.spool import entries_on_disk

    db = _database_queue()
    if db is not None:
        return [(None, e) for e in sorted(db.list(), key=lambda e: (e.arrival, e.queue_id))]
    found = [(root, e) for root in _roots() for e in entries_on_disk(root)]
    return sorted(found, key=lambda p: (p[1].arrival, p[1].queue_id))


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _as_dict(root: Path | None, e) -> dict:
    return {"id": e.queue_id, "spool": root.name if root is not None else "database", "queue": e.queue,
            "sender": e.sender or "<>", "arrival": _when(e.arrival),
            "attempts": e.attempts, "next_attempt": _when(e.next_attempt), "size": e.size, "last_error": e.last_error,
            "recipients": [{"address": r.address, "state": r.state.value, "status": r.status, "error": r.error}
                           for r in e.recipients], "meta": dict(e.meta)}


@handle_errors
def queue_list(json_out: bool = typer.Option(False, "--json", help="machine-readable output")):
    """List queued messages of every process of the node, oldest first."""
    rows = [_as_dict(root, e) for root, e in _entries()]
    if json_out:
        print_json(rows)
        return
    spool = _selected["spool"]
    dirs = ", ".join(f"spool/{p.name}" for p in _roots()) or f"spool/{spool}"
    print_table(f"{spool} queue ({dirs}): {count(len(rows), 'entry')}",
                ["id", "spool", "queue", "sender", "pending", "attempts", "next attempt", "last error"],
                [[r["id"], r["spool"], r["queue"], r["sender"],
                  ", ".join(x["address"] for x in r["recipients"] if x["state"] == "pending"),
                  r["attempts"], r["next_attempt"], (r["last_error"] or "")[:80]] for r in rows])


def _find(queue_id: str) -> tuple[Path | None, object]:
    found = next(((root, e) for root, e in _entries() if e.queue_id == queue_id.upper()), None)
    if found is None:
        raise fail(f"no queued message {queue_id}")
    return found


@handle_errors
def queue_show(queue_id: str, json_out: bool = typer.Option(False, "--json")):
    """One message: envelope, per-recipient state, and its headers."""
    from mxgate.queue.spool import parse_queue_file
    from mxgate.smtp.message import header_block

    root, e = _find(queue_id)
    if root is None:
        message = asyncio.run(_database_queue().open_message(e))
    else:
        raw = (root / e.queue / e.queue_id).read_bytes()
        parsed = parse_queue_file(raw, e.queue, e.queue_id)
        message = raw[parsed.body_offset: parsed.body_offset + parsed.size]
    headers = header_block(message).decode("utf-8", "replace")
    data = {**_as_dict(root, e), "headers": headers}
    if json_out:
        print_json(data)
        return
    for k, v in data.items():
        if k not in ("recipients", "headers"):
            out.print(f"{k}: {v}", markup=False)
    for r in data["recipients"]:
        out.print(f"  {r['address']}: {r['state']} {r['status'] or ''} {r['error'] or ''}", markup=False)
    out.print("\n" + headers, markup=False)


def _request(target: str, action: str, json_out: bool, root: Path | None = None) -> None:
    """`target` (a queue id in `root`, or "all" in every directory): to the process owning each
    directory as a request file, or applied here when none does."""
    db = _database_queue()
    if db is not None:
        # Rows change under the same revision rules the gateways use: no request folder needed.
        asyncio.run(_apply_database(db, target, action))
        states = ["applied"]
    else:
        states = [_request_one(r, target, action) for r in ([root] if root is not None else _roots())]
    state = "; ".join(dict.fromkeys(states)) or "applied (the queue is empty)"
    if json_out:
        print_json({"target": target, "action": action, "state": state})
    else:
        out.print(f"{action} {target}: {state}", markup=False)


def _request_one(root: Path, target: str, action: str) -> str:
    from mxgate.errors import ConfigError
    from mxgate.queue.runner import REQUESTS_DIR
    from mxgate.queue.spool import lock_spool, spool_owned

    if not spool_owned(root):
        try:
            fd = lock_spool(root)  # held while changing it: a process starting now waits for nothing, it refuses
        except ConfigError:
            pass  # a process took it just now: ask it instead
        else:
            try:
                asyncio.run(_apply_offline(root, target, action))
            finally:
                os.close(fd)
            return "applied (gateway not running)"
    folder = root / REQUESTS_DIR
    folder.mkdir(exist_ok=True)
    path = folder / f"{target}.{action}"
    path.write_bytes(b"")
    end = time.monotonic() + REQUEST_WAIT
    while path.exists() and time.monotonic() < end:
        time.sleep(0.05)
    return "applied" if not path.exists() else "pending (the gateway will apply it on its next scan)"


async def _apply_database(db, target: str, action: str) -> None:
    entries = db.list() if target == "all" else [e for e in [db.get(target)] if e is not None]
    for e in entries:
        if e.queue == "active":
            continue  # a gateway holds its lease; it will settle the message itself
        if action == "delete":
            await db.remove(e)
        else:
            await db.retry_now(e, time.time())


async def _apply_offline(root: Path, target: str, action: str) -> None:
    from mxgate.durable import GroupCommitter
    from mxgate.queue.spool import DiskSpool

    async with GroupCommitter() as committer:
        spool = await asyncio.to_thread(DiskSpool.open, root, committer)
        entries = spool.list() if target == "all" else [e for e in [spool.get(target)] if e is not None]
        for e in entries:
            if action == "delete":
                await spool.remove(e)
                continue
            if e.queue == "hold":
                e = await spool.release(e)
            # Due now; counts as an attempt, which only brings expiry no closer.
            await spool.defer(e, e.pending, e.last_error or "retry requested by admin", time.time())


@handle_errors
def queue_retry(queue_id: str, json_out: bool = typer.Option(False, "--json")):
    """Try one message again now (releases it from hold)."""
    root, e = _find(queue_id)
    _request(e.queue_id, "retry", json_out, root)


@handle_errors
def queue_delete(queue_id: str, json_out: bool = typer.Option(False, "--json")):
    """Remove one message from the queue without delivering it or sending a DSN."""
    root, e = _find(queue_id)
    _request(e.queue_id, "delete", json_out, root)


@handle_errors
def queue_flush(json_out: bool = typer.Option(False, "--json")):
    """Try every queued message now, in every process's directory."""
    _request("all", "flush", json_out)


@handle_errors
def arc_dns(config: Optional[Path] = typer.Option(None, "--config", "-c", help="node.toml with [gateway] arc_domain/arc_selector")):
    """Print the DNS TXT record publishing the gateway's ARC key (the key is created if missing)."""
    from mxgate.config.node import load_settings
    from mxgate.store.keys import KeyRing

    g = load_settings(config).gateway
    # read=True: a record to publish is the node's; a missing home is refused, not created with a new key
    ring = KeyRing(engine(read=True), home(read=True).keys)  # the cluster's ARC key (store/keys.py), the one every gateway seals with
    selector, _pem = ring.arc(g.arc_selector)
    txt = next(t for s, t, _state in ring.public_records("arc", "arc") if s == selector)
    chunks = " ".join(f'"{txt[i:i + 255]}"' for i in range(0, len(txt), 255))  # RFC 1035 §3.3: 255-octet strings
    out.print(f"{selector}._domainkey.{g.arc_domain}. IN TXT ( {chunks} )", markup=False)
