"""`mxgate queue list|show|retry|delete|flush` and `mxgate gateway arc-dns`.

Owns: the admin's view of the gateway spool. Reading never changes the spool (files are parsed
in place, no recovery runs). Changes go to the running gateway as request files it applies on
its next scan (`<spool>/requests/`), because only that process may rewrite its queue; when no
gateway holds the spool lock, the command opens the spool itself.
Must not know: SMTP or relaying.
"""

from __future__ import annotations

import asyncio
import fcntl
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


def _root() -> Path:
    return home(read=True).spool / _selected["spool"]


def _database_queue():
    """The shared queue of `[gateway] queue = "database"` (every node sees the same rows), or None."""
    from mxgate.cli.common import engine, settings

    if settings().gateway.queue != "database" or _selected["spool"] != "gateway":
        return None
    from mxgate.queue.dbspool import DbSpool

    return DbSpool(engine(read=True), "cli", _root())


def _entries() -> list:
    from mxgate.queue.spool import LIVE_QUEUES, QUEUE_ID_RE, SpoolError, parse_queue_file

    db = _database_queue()
    if db is not None:
        return sorted(db.list(), key=lambda e: (e.arrival, e.queue_id))

    found = []
    for queue in LIVE_QUEUES:
        folder = _root() / queue
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if not QUEUE_ID_RE.match(path.name):
                continue
            try:
                found.append(parse_queue_file(path.read_bytes(), queue, path.name))
            except (SpoolError, OSError):
                continue  # being rewritten right now, or partial: recovery's business
    found.sort(key=lambda e: (e.arrival, e.queue_id))
    best = {}
    for e in found:  # two revisions during a rewrite: show the newest
        if e.queue_id not in best or e.revision > best[e.queue_id].revision:
            best[e.queue_id] = e
    return list(best.values())


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _as_dict(e) -> dict:
    return {"id": e.queue_id, "queue": e.queue, "sender": e.sender or "<>", "arrival": _when(e.arrival),
            "attempts": e.attempts, "next_attempt": _when(e.next_attempt), "size": e.size, "last_error": e.last_error,
            "recipients": [{"address": r.address, "state": r.state.value, "status": r.status, "error": r.error}
                           for r in e.recipients], "meta": dict(e.meta)}


@handle_errors
def queue_list(json_out: bool = typer.Option(False, "--json", help="machine-readable output")):
    """List queued messages, oldest first."""
    rows = [_as_dict(e) for e in _entries()]
    if json_out:
        print_json(rows)
        return
    spool = _selected["spool"]
    print_table(f"{spool} queue (spool/{spool}): {count(len(rows), 'entry')}", ["id", "queue", "sender", "pending", "attempts", "next attempt", "last error"],
                [[r["id"], r["queue"], r["sender"], ", ".join(x["address"] for x in r["recipients"] if x["state"] == "pending"),
                  r["attempts"], r["next_attempt"], (r["last_error"] or "")[:80]] for r in rows])


def _find(queue_id: str):
    entry = next((e for e in _entries() if e.queue_id == queue_id.upper()), None)
    if entry is None:
        raise fail(f"no queued message {queue_id}")
    return entry


@handle_errors
def queue_show(queue_id: str, json_out: bool = typer.Option(False, "--json")):
    """One message: envelope, per-recipient state, and its headers."""
    from mxgate.queue.spool import parse_queue_file
    from mxgate.smtp.message import header_block

    e = _find(queue_id)
    db = _database_queue()
    if db is not None:
        message = asyncio.run(db.open_message(e))
    else:
        raw = (_root() / e.queue / e.queue_id).read_bytes()
        parsed = parse_queue_file(raw, e.queue, e.queue_id)
        message = raw[parsed.body_offset: parsed.body_offset + parsed.size]
    headers = header_block(message).decode("utf-8", "replace")
    data = {**_as_dict(e), "headers": headers}
    if json_out:
        print_json(data)
        return
    for k, v in data.items():
        if k not in ("recipients", "headers"):
            out.print(f"{k}: {v}", markup=False)
    for r in data["recipients"]:
        out.print(f"  {r['address']}: {r['state']} {r['status'] or ''} {r['error'] or ''}", markup=False)
    out.print("\n" + headers, markup=False)


def _gateway_running() -> bool:
    lock = _root() / "gateway.lock"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _request(target: str, action: str, json_out: bool) -> None:
    db = _database_queue()
    if db is not None:
        # Rows change under the same revision rules the gateways use: no request folder needed.
        asyncio.run(_apply_database(db, target, action))
        state = "applied"
    elif _gateway_running():
        folder = _root() / "requests"
        folder.mkdir(exist_ok=True)
        path = folder / f"{target}.{action}"
        path.write_bytes(b"")
        end = time.monotonic() + REQUEST_WAIT
        while path.exists() and time.monotonic() < end:
            time.sleep(0.05)
        state = "applied" if not path.exists() else "pending (the gateway will apply it on its next scan)"
    else:
        asyncio.run(_apply_offline(target, action))
        state = "applied (gateway not running)"
    if json_out:
        print_json({"target": target, "action": action, "state": state})
    else:
        out.print(f"{action} {target}: {state}", markup=False)


async def _apply_database(db, target: str, action: str) -> None:
    entries = db.list() if target == "all" else [e for e in [db.get(target)] if e is not None]
    for e in entries:
        if e.queue == "active":
            continue  # a gateway holds its lease; it will settle the message itself
        if action == "delete":
            await db.remove(e)
        else:
            await db.retry_now(e, time.time())


async def _apply_offline(target: str, action: str) -> None:
    from mxgate.durable import GroupCommitter
    from mxgate.queue.spool import DiskSpool

    async with GroupCommitter() as committer:
        spool = await asyncio.to_thread(DiskSpool.open, _root(), committer)
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
    _request(_find(queue_id).queue_id, "retry", json_out)


@handle_errors
def queue_delete(queue_id: str, json_out: bool = typer.Option(False, "--json")):
    """Remove one message from the queue without delivering it or sending a DSN."""
    _request(_find(queue_id).queue_id, "delete", json_out)


@handle_errors
def queue_flush(json_out: bool = typer.Option(False, "--json")):
    """Try every queued message now."""
    _request("all", "flush", json_out)


@handle_errors
def arc_dns(config: Optional[Path] = typer.Option(None, "--config", "-c", help="node.toml with [gateway] arc_domain/arc_selector")):
    """Print the DNS TXT record publishing the gateway's ARC key (the key is created if missing)."""
    from mxgate.config.node import load_settings
    from mxgate.store.keys import KeyRing

    g = load_settings(config).gateway
    ring = KeyRing(engine(), home().keys)  # the cluster's ARC key (store/keys.py), the one every gateway seals with
    selector, _pem = ring.arc(g.arc_selector)
    txt = next(t for s, t, _state in ring.public_records("arc", "arc") if s == selector)
    chunks = " ".join(f'"{txt[i:i + 255]}"' for i in range(0, len(txt), 255))  # RFC 1035 §3.3: 255-octet strings
    out.print(f"{selector}._domainkey.{g.arc_domain}. IN TXT ( {chunks} )", markup=False)
