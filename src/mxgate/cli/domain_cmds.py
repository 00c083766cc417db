"""`mxgate domain list|show|new|set|remove` — accepted domains (New-AcceptedDomain)."""

from __future__ import annotations

from typing import Optional

import typer

from mxgate.cli.objects import given, handle_errors, list_objects, save_edit, show_object
from mxgate.errors import PolicyFormatError

app = typer.Typer(help="Accepted domains.", no_args_is_help=True)
KIND = "accepted_domain"


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="domain")


@app.command("list")
@handle_errors
def list_(json_out: bool = typer.Option(False, "--json")):
    """List accepted domains."""
    list_objects(KIND, ["name", "type", "match_subdomains"], json_out)


@app.command("show")
@handle_errors
def show(name: str, json_out: bool = typer.Option(False, "--json")):
    show_object(KIND, name, json_out)


@app.command("new")
@handle_errors
def new(name: str,
        type_: str = typer.Option("authoritative", "--type", help="authoritative | internal_relay"),
        match_subdomains: bool = typer.Option(False, "--match-subdomains/--no-match-subdomains")):
    """Add an accepted domain."""
    from mxgate.names import normalize_domain

    save_edit(KIND, "new", name, {"name": normalize_domain(name), "type": type_, "match_subdomains": match_subdomains})


@app.command("set")
@handle_errors
def set_(name: str,
         type_: Optional[str] = typer.Option(None, "--type"),
         match_subdomains: Optional[bool] = typer.Option(None, "--match-subdomains/--no-match-subdomains")):
    """Change an accepted domain."""
    values = given(type=type_, match_subdomains=match_subdomains)
    if not values:
        raise PolicyFormatError("nothing to change: give at least one option")
    save_edit(KIND, "set", name, values)


@app.command("remove")
@handle_errors
def remove(name: str):
    """Remove an accepted domain."""
    save_edit(KIND, "remove", name)
