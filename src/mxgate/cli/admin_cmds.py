"""`mxgate admin set-password` and `mxgate admin token new|list|revoke` — access to the admin centre.

Owns: the shell side of admin/auth.py (one code path with the web app). A password is read
from a prompt (or --password-stdin), never from the command line where `ps` would show it.
A token is printed once, when created; only its hash is stored.
"""

from __future__ import annotations

import datetime as dt
import sys

import typer

from mxgate.cli.common import engine, handle_errors, out, print_json, print_table

app = typer.Typer(help="Admin centre access: the admin password and API tokens.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens for the REST API (/api/v1).", no_args_is_help=True)
app.add_typer(token_app, name="token")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="admin")


def _utc(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if ts else "never"


@app.command("set-password")
@handle_errors
def set_password(username: str = typer.Option("admin", "--username", "-u"),
                 password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from stdin")):
    """Create the admin account or change its password (argon2 hash in the store)."""
    from mxgate.admin import auth

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    auth.set_password(engine(), username, password)
    out.print(f"password set for {username!r}", markup=False)


@app.command("remove-user")
@handle_errors
def remove_user(username: str = typer.Argument(..., help="the admin account to remove")):
    """Remove an admin account; its sessions end at once on every node."""
    from mxgate.admin import auth

    auth.remove_user(engine(), username)
    out.print(f"admin user {username!r} removed; their sessions are ended", markup=False)


@app.command("users")
@handle_errors
def list_users():
    """The admin accounts."""
    from mxgate.admin import auth

    for name in auth.users(engine(read=True)):
        out.print(name, markup=False)


@token_app.command("new")
@handle_errors
def token_new(name: str = typer.Argument(..., help="what the token is for, e.g. 'ci' or 'monitoring'")):
    """Create an API token; it is shown once (send it as `Authorization: Bearer <token>`)."""
    from mxgate.admin import auth

    info, token = auth.new_token(engine(), name)
    out.print(f"token {info.id} ({info.name}) — shown once, keep it safe:", markup=False)
    sys.stdout.write(token + "\n")


@token_app.command("list")
@handle_errors
def token_list(json_out: bool = typer.Option(False, "--json")):
    """API tokens (never their secrets)."""
    from mxgate.admin import auth

    tokens = auth.list_tokens(engine(read=True))
    if json_out:
        print_json([vars(t) for t in tokens])
        return
    print_table("API tokens", ["id", "name", "created (UTC)", "last used (UTC)"],
                [[t.id, t.name, _utc(t.created_at), _utc(t.last_used)] for t in tokens])


@token_app.command("revoke")
@handle_errors
def token_revoke(token_id: str = typer.Argument(..., help="the id shown by `token list`")):
    """Revoke an API token at once."""
    from mxgate.admin import auth

    auth.revoke_token(engine(), token_id)
    out.print(f"token {token_id} revoked", markup=False)
