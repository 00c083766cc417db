"""`mxgate quarantine list|show|release|delete` — messages held back by authentication policy.

Owns: the admin's view of quarantine/store.py from a shell. Release runs in this process,
with no node running: it writes into the home's Maildirs through its own group committer and
records the `Release` event in the message trace itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import typer

from mxgate.cli.common import actor, engine, handle_errors, home, out, policy_store, print_json, print_table, settings
from mxgate.wording import count

app = typer.Typer(help="Quarantine: messages held by DMARC policy; preview, release or delete them.",
                  no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="quarantine")


def _store():
    from mxgate.quarantine.store import QuarantineStore

    return QuarantineStore(engine(read=True))


def _utc(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


@app.command("list")
@handle_errors
def list_cmd(all_: bool = typer.Option(False, "--all", help="include released messages"),
             limit: int = typer.Option(100, "--limit"), json_out: bool = typer.Option(False, "--json")):
    """Quarantined messages, newest first."""
    rows = _store().list(include_released=all_, limit=limit)
    if json_out:
        print_json(rows)
        return
    print_table("Quarantine", ["id", "date (UTC)", "reason", "sender", "recipients", "subject", "released"],
                [[r["id"], _utc(r["created_at"]), r["reason"], r["sender"], ", ".join(r["recipients"]),
                  r["subject"], f"{_utc(r['released_at'])} by {r['released_by']}" if r["released_at"] else ""]
                 for r in rows])


@app.command("show")
@handle_errors
def show_cmd(qid: str = typer.Argument(..., help="quarantine id (first column of `mxgate quarantine list`)"),
             json_out: bool = typer.Option(False, "--json")):
    """Preview one message: why it was held, its key headers and the start of its body."""
    item = _store().preview(qid)
    if json_out:
        print_json(item)
        return
    action = item["detail"].get("action", {})
    print_table(f"Quarantined message {qid}", ["field", "value"], [
        ["date (UTC)", _utc(item["created_at"])], ["reason", item["reason"]], ["why", action.get("detail", "")],
        ["sender", item["sender"]], ["recipients", ", ".join(item["recipients"])], ["size", item["size"]],
        ["trace id", item["trace_id"]], ["released", _utc(item["released_at"])]])
    print_table("Headers", ["name", "value"], item["headers"])
    out.print(item["body_preview"], markup=False)


@app.command("release")
@handle_errors
def release_cmd(qid: str = typer.Argument(...), json_out: bool = typer.Option(False, "--json")):
    """Deliver the message into its recipients' inboxes and record the release in the trace."""
    from mxgate.trace.store import TraceStore

    h = home()
    paths = asyncio.run(_release(h, qid, TraceStore(engine())))
    if json_out:
        print_json({"id": qid, "delivered": [str(p) for p in paths]})
        return
    out.print(f"released {qid}: delivered {count(len(paths), 'copy')}", markup=False)


async def _release(h, qid: str, trace) -> list:
    """Route the released message as the node would (forwarding, lists): local copies into the
    home's Maildirs, external ones into its outbound queue — only while no node owns that queue,
    else nothing is delivered and the admin is sent to the node's admin centre."""
    from mxgate.durable import GroupCommitter
    from mxgate.delivery.internal import offline_internal
    from mxgate.delivery.maildir import Maildir
    from mxgate.policy.attribution import compile_policy
    from mxgate.quarantine.store import QuarantineStateError

    store = _store()
    pv = policy_store().current()
    committer = GroupCommitter(name="mxgate-release")
    committer.start()
    maildir = Maildir(h.maildir, committer, hostname=settings().mailbox.hostname)
    internal = offline_internal(h, compile_policy(pv.policy, pv.version), trace, maildir, committer)
    try:
        item = store.get(qid)
        if (item["released_at"] is None and not internal.outbound.available
                and internal.plan(item["recipients"], item["body"]).external):
            raise QuarantineStateError(
                f"quarantined message {qid} is forwarded outside the organisation, and a running node owns the"
                f" outbound queue: release it from that node's admin centre (Quarantine, or"
                f" POST /api/v1/quarantine/{qid}/release)")
        return await store.release_into(qid, maildir, actor=actor(), trace=trace, deliver=internal.release)
    finally:
        internal.outbound.close()
        await committer.aclose()


@app.command("delete")
@handle_errors
def delete_cmd(qid: str = typer.Argument(...)):
    """Drop the message for good (the record of the decision stays in the trace)."""
    _store().delete(qid)
    out.print(f"deleted {qid}", markup=False)
