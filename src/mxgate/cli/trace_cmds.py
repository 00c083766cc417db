"""`mxgate trace [filters]` and `mxgate trace show ID` — the message trace (mail-flow.md §6)."""

from __future__ import annotations

import datetime as dt
from typing import Optional

import typer

from mxgate.cli.common import engine, handle_errors, print_json, print_table
from mxgate.trace.query import search_args

app = typer.Typer(help="Message trace: every accepted message and every refused attempt.", invoke_without_command=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="trace")


def _store():
    from mxgate.trace.store import TraceStore

    return TraceStore(engine(read=True))


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@app.callback()
@handle_errors
def search(ctx: typer.Context,
           since: Optional[str] = typer.Option(None, "--since"), until: Optional[str] = typer.Option(None, "--until"),
           sender: Optional[str] = typer.Option(None, "--sender"), recipient: Optional[str] = typer.Option(None, "--recipient"),
           status: Optional[str] = typer.Option(None, "--status"), ip: Optional[str] = typer.Option(None, "--ip"),
           message_id: Optional[str] = typer.Option(None, "--message-id"), limit: int = typer.Option(50, "--limit"),
           json_out: bool = typer.Option(False, "--json")):
    """Search the trace (newest first)."""
    if ctx.invoked_subcommand:
        return
    rows = _store().search(**search_args(since, until, sender, recipient, status, ip, message_id, limit))
    if json_out:
        print_json(rows)
        return
    print_table("Message trace", ["id", "date (UTC)", "status", "sender", "recipient", "from ip", "original ip",
                                  "connector", "policy", "reason / subject"],
                [[r["id"], _utc(r["created_at"]), r["status"], r["sender"], r["recipient"], r["from_ip"],
                  r["original_ip"], r["connector"], r["policy_version"], r["reason"] or r["subject"]] for r in rows])


@app.command("show")
@handle_errors
def show(row_id: int = typer.Argument(..., help="trace row id (first column of `mxgate trace`)"),
         json_out: bool = typer.Option(False, "--json")):
    """One trace row with its events."""
    row = _store().show(row_id)
    if json_out:
        print_json(row)
        return
    fields = [[k, v] for k, v in row.items() if k not in ("events", "detail")]
    fields += [[f"detail.{k}", v] for k, v in row["detail"].items()]
    print_table(f"Trace row {row_id}", ["field", "value"], fields)
    print_table("Events", ["time (UTC)", "event", "detail"], [[_utc(e["at"]), e["event"], e["detail"]] for e in row["events"]])
