"""`mxgate mailbox set-password`, `mxgate app-credential new|list|remove`, `mxgate dkim show-dns`.

Submission credentials and the DKIM records to publish. Passwords are read from a prompt that
does not echo, or from stdin with --password-stdin (scripts); they never appear on the command
line, where `ps` and shell history would keep them. An application secret is printed once.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from mxgate.cli.common import engine, home, out, policy_store, print_json, print_table
from mxgate.cli.mailbox_cmds import app as mailbox_app
from mxgate.cli.common import handle_errors
from mxgate.errors import PolicyFormatError

app_credential = typer.Typer(help="Application credentials for authenticated submission.", no_args_is_help=True)
dkim_app = typer.Typer(help="DKIM signing keys of the organisation's domains.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app_credential, name="app-credential")
    root.add_typer(dkim_app, name="dkim")


def _policy():
    return policy_store().current().policy


@mailbox_app.command("set-password")
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
    set_mailbox_password(engine(), _policy(), address, password)
    out.print(f"password set for {address.lower()}", markup=False)


@app_credential.command("new")
@handle_errors
def new(name: str, address: str = typer.Option(..., "--address", help="the mailbox address the application sends as"),
        description: str = typer.Option("", "--description")):
    """Create (or replace) an application credential; the secret is shown once."""
    from mxgate.auth.credentials import new_app_credential

    secret = new_app_credential(engine(), _policy(), name, address, description)
    out.print(f"username: {name.lower()}\nsecret:   {secret}\n(shown once: store it now)", markup=False)


@app_credential.command("list")
@handle_errors
def list_(json_out: bool = typer.Option(False, "--json")):
    """List credentials (never their secrets)."""
    from mxgate.auth.credentials import list_credentials

    rows = list_credentials(engine(read=True))
    if json_out:
        print_json(rows)
        return
    print_table("Credentials", ["username", "kind", "address", "description"],
                [[r["username"], r["kind"], r["address"], r["description"]] for r in rows])


@app_credential.command("remove")
@handle_errors
def remove(name: str):
    """Remove a credential (mailbox or application)."""
    from mxgate.auth.credentials import remove_credential

    remove_credential(engine(), name)
    out.print(f"removed {name.lower()}", markup=False)


@dkim_app.command("show-dns")
@handle_errors
def show_dns(domain: str, selector: Optional[str] = typer.Option(None, "--selector"),
             json_out: bool = typer.Option(False, "--json")):
    """Print the DKIM TXT record to publish for DOMAIN (the key is generated on first use)."""
    from mxgate.auth.dkim_sign import DEFAULT_SELECTOR
    from mxgate.policy.validate import accepted_domain_for

    if accepted_domain_for(_policy(), domain) is None:
        raise PolicyFormatError(f"{domain!r} is not an accepted domain: mxgate signs only the organisation's domains")
    from mxgate.store.keys import KeyRing

    sel = selector or DEFAULT_SELECTOR
    # The cluster's key (store/keys.py): the one every node signs with, so the record matches.
    active, _pem = KeyRing(engine(), home().keys).dkim(domain, sel)
    txt = next(t for s, t, state in KeyRing(engine(), home().keys).public_records("dkim", domain.lower().rstrip("."))
               if s == active)
    name = f"{active}._domainkey.{domain.lower().rstrip('.')}"
    if json_out:
        print_json({"name": name, "type": "TXT", "value": txt})
        return
    chunks = " ".join(f'"{txt[i:i + 255]}"' for i in range(0, len(txt), 255))  # RFC 1035 §3.3.14
    out.print(f"{name}. IN TXT ( {chunks} )", markup=False)
