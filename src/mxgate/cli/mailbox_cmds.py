"""`mxgate mailbox list|show|new|set|remove|set-password` — mailboxes, aliases, forwarding, distribution
lists, and a mailbox's submission password (read from a prompt that does not echo, or from stdin
with --password-stdin; never from the command line, where `ps` and shell history would keep it)."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from mxgate.cli.common import engine, out, policy_store, split_list
from mxgate.cli.objects import given, handle_errors, list_objects, save_edit, show_object
from mxgate.errors import PolicyFormatError

app = typer.Typer(help="Mailboxes (with aliases, forwarding, members for distribution lists).", no_args_is_help=True)
KIND = "mailbox"


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="mailbox")


@app.command("list")
@handle_errors
def list_(json_out: bool = typer.Option(False, "--json")):
    """List mailboxes."""
    list_objects(KIND, ["address", "aliases", "forward_to", "keep_copy", "members"], json_out)


@app.command("show")
@handle_errors
def show(address: str, json_out: bool = typer.Option(False, "--json")):
    show_object(KIND, address, json_out)


def _values(aliases, forward_to, keep_copy, members, send_as) -> dict:
    return given(aliases=split_list(aliases), forward_to=split_list(forward_to), keep_copy=keep_copy,
                 members=split_list(members), send_as=split_list(send_as))


@app.command("new")
@handle_errors
def new(address: str,
        alias: Optional[list[str]] = typer.Option(None, "--alias"),
        forward_to: Optional[list[str]] = typer.Option(None, "--forward-to"),
        keep_copy: Optional[bool] = typer.Option(None, "--keep-copy/--no-keep-copy"),
        member: Optional[list[str]] = typer.Option(None, "--member", help="makes this a distribution list"),
        send_as: Optional[list[str]] = typer.Option(None, "--send-as")):
    """Create a mailbox."""
    save_edit(KIND, "new", address, {"address": address.lower(), **_values(alias, forward_to, keep_copy, member, send_as)})


@app.command("set")
@handle_errors
def set_(address: str,
         alias: Optional[list[str]] = typer.Option(None, "--alias"),
         forward_to: Optional[list[str]] = typer.Option(None, "--forward-to"),
         keep_copy: Optional[bool] = typer.Option(None, "--keep-copy/--no-keep-copy"),
         member: Optional[list[str]] = typer.Option(None, "--member"),
         send_as: Optional[list[str]] = typer.Option(None, "--send-as")):
    """Change a mailbox; lists given replace the old lists."""
    values = _values(alias, forward_to, keep_copy, member, send_as)
    if not values:
        raise PolicyFormatError("nothing to change: give at least one option")
    save_edit(KIND, "set", address, values)


@app.command("remove")
@handle_errors
def remove(address: str):
    """Remove a mailbox."""
    save_edit(KIND, "remove", address)


@app.command("set-password")
@handle_errors
def set_password(address: str,
                 password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from stdin")):
    """Set the mailbox's submission password (login name = the mailbox address)."""
    from mxgate.auth.credentials import set_mailbox_password

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise PolicyFormatError("password: empty")
    set_mailbox_password(engine(), policy_store().current().policy, address, password)
    out.print(f"password set for {address.lower()}", markup=False)
