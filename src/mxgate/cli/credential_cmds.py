"""`mxgate app-credential new|list|remove`, `mxgate dkim show-dns`.

Submission credentials and the DKIM records to publish. An application secret is printed once.
A mailbox's own password is `mxgate mailbox set-password` (mailbox_cmds.py: a command line
registers only the module of the group it names, so a group's commands live in its module).
"""

from __future__ import annotations

from typing import Optional

import typer

from mxgate.cli.common import engine, home, out, policy_store, print_json, print_table
from mxgate.cli.common import handle_errors
from mxgate.errors import PolicyFormatError

app_credential = typer.Typer(help="Application credentials for authenticated submission.", no_args_is_help=True)
dkim_app = typer.Typer(help="DKIM signing keys of the organisation's domains.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app_credential, name="app-credential")
    root.add_typer(dkim_app, name="dkim")


def _policy():
    return policy_store().current().policy


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
