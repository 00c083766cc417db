"""`mxgate keys list|rotate|dns|export|import`: the cluster's SRS, DKIM and ARC keys (store/keys.py).

Material is only ever written by `export`, into a 0600 file; nothing here prints it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from mxgate.cli.common import engine, handle_errors, home, out, print_json, print_table, settings


def register(app: typer.Typer) -> None:
    keys_app = typer.Typer(help="Keys every node shares: SRS secret, DKIM and ARC signing keys.", no_args_is_help=True)
    keys_app.command("list")(keys_list)
    keys_app.command("rotate")(keys_rotate)
    keys_app.command("dns")(keys_dns)
    keys_app.command("export")(keys_export)
    keys_app.command("import")(keys_import)
    app.add_typer(keys_app, name="keys")


def _ring(read: bool = False):
    """read=True for commands that only read: a missing home is refused, not created."""
    from mxgate.store.keys import KeyRing

    return KeyRing(engine(read), home(read).keys)


def _our_domain(domain: str) -> None:
    """DKIM keys are for accepted domains only, as `mxgate dkim show-dns` and the admin centre say."""
    from mxgate.cli.common import policy_store
    from mxgate.errors import PolicyFormatError
    from mxgate.policy.validate import accepted_domain_for

    if domain and accepted_domain_for(policy_store().current().policy, domain.lower().rstrip(".")) is None:
        raise PolicyFormatError(f"{domain!r} is not an accepted domain: DKIM keys are for the organisation's own domains")


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) if t else "-"


@handle_errors
def keys_list(json_out: bool = typer.Option(False, "--json")):
    """Every key: kind, name, selector, state (active signs; retired still verifies until its date)."""
    now = time.time()
    rows = _ring(read=True).list()
    if json_out:
        print_json([{"kind": k.kind, "name": k.name, "serial": k.serial, "selector": k.selector,
                     "state": k.state(now), "created_at": k.created_at, "valid_until": k.valid_until} for k in rows])
        return
    print_table("Cluster keys", ["kind", "name", "serial", "selector", "state", "created (UTC)", "valid until (UTC)"],
                [[k.kind, k.name, k.serial, k.selector or "-", k.state(now), _when(k.created_at), _when(k.valid_until)]
                 for k in rows])


@handle_errors
def keys_rotate(kind: str = typer.Argument(..., help="srs, dkim or arc"),
                domain: str = typer.Option("", "--domain", help="the signing domain (dkim)"),
                overlap_days: Optional[float] = typer.Option(None, "--overlap-days",
                                                             help="days the replaced key stays valid (default: srs 21, dkim/arc 7)"),
                json_out: bool = typer.Option(False, "--json")):
    """A new key signs on every node from now on (within [node] key_refresh); the old one stays valid
    for the overlap. For DKIM/ARC publish the new TXT record (printed) before mail signed with it leaves."""
    if overlap_days is not None and overlap_days < 0:
        raise typer.BadParameter("days the replaced key stays valid: 0 or more", param_hint="--overlap-days")
    if kind == "dkim":
        _our_domain(domain)
    base = settings().gateway.arc_selector if kind == "arc" else None
    info = _ring().rotate(kind, domain, overlap=None if overlap_days is None else overlap_days * 86400, base=base)
    if json_out:
        print_json({"kind": info.kind, "name": info.name, "serial": info.serial, "selector": info.selector,
                    "txt": info.public})
        return
    out.print(f"rotated {info.kind} {info.name}: serial {info.serial}" +
              (f", selector {info.selector}" if info.selector else ""), markup=False)
    if info.public:
        out.print(_zone(info.selector, _record_domain(kind, info.name), info.public), markup=False)


def _record_domain(kind: str, name: str) -> str:
    return settings().gateway.arc_domain if kind == "arc" else name


def _zone(selector: str, domain: str, txt: str) -> str:
    chunks = " ".join(f'"{txt[i:i + 255]}"' for i in range(0, len(txt), 255))  # RFC 1035 §3.3.14
    return f"{selector}._domainkey.{domain}. IN TXT ( {chunks} )"


@handle_errors
def keys_dns(kind: str = typer.Argument(..., help="dkim or arc"),
             domain: str = typer.Option("", "--domain", help="the signing domain (dkim)")):
    """The TXT records to publish: the active key and every retired one still in its overlap."""
    if kind == "dkim" and not domain:
        raise typer.BadParameter("--domain is required for dkim")
    # A record to publish is the running node's: a missing home is refused, never created with a
    # fresh key of its own that the admin would publish instead of the one the node signs with.
    ring = _ring(read=True)
    if kind == "dkim":
        _our_domain(domain)
        ring.dkim(domain)
        records = ring.public_records("dkim", domain.lower().rstrip("."))
    elif kind == "arc":
        ring.arc(settings().gateway.arc_selector)
        records = ring.public_records("arc", "arc")
    else:
        raise typer.BadParameter("kind must be dkim or arc (an SRS secret has no DNS record)")
    for selector, txt, state in records:
        out.print(f"; {state}", markup=False)
        out.print(_zone(selector, _record_domain(kind, domain.lower().rstrip(".")), txt), markup=False)


@handle_errors
def keys_export(path: Path = typer.Argument(..., help="file to write (created 0600)")):
    """Every key with its private material, for `mxgate keys import` on another store. Keep it secret."""
    n = _ring(read=True).export(path)
    out.print(f"exported {n} key(s) to {path} (mode 0600)", markup=False)


@handle_errors
def keys_import(path: Path = typer.Argument(..., help="a file from `mxgate keys export`")):
    """Add the keys of an export file; keys already in the store are kept. Import before a new
    cluster's first start, or its nodes make their own."""
    n = _ring().import_(path)
    out.print(f"imported {n} new key(s) from {path}", markup=False)
