"""`mxgate policy ...` and `mxgate org ...`: the policy as a file, its history, organisation settings."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Optional

import typer

from mxgate.cli.common import (
    actor,
    echo,
    handle_errors,
    policy_store,
    print_json,
    print_table,
    split_list,
    warn,
)

policy_app = typer.Typer(help="The organisation policy as a file: apply, export, validate, history.", no_args_is_help=True)
org_app = typer.Typer(help="Organisation settings (name, authserv-id, ARC trusted sealers).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")
    app.add_typer(org_app, name="org")


def _read(file: Path):
    from mxgate.policy.document import read_policy_file

    return read_policy_file(file)


def show_save_result(saved, warnings: list[str]) -> None:
    for w in warnings:
        warn(w)
    echo(f"policy version {saved.version}: {saved.summary}")


def save_change(store, current, new, suffix: str = "") -> None:
    """Store `new` as the version after `current` and say so. A policy equal to the one in force
    is no change (README: every change is a new version): said, and nothing is stored — else each
    no-op `set` would be a version every node loads and announces."""
    from mxgate.policy.document import summarize_change
    from mxgate.policy.validate import policy_warnings

    if current.version and current.policy == new:
        echo(f"policy version {current.version} already matches; nothing applied")
        return
    saved = store.save(new, actor=actor(), summary=summarize_change(current.policy, new) + suffix,
                       base_version=current.version)
    show_save_result(saved, policy_warnings(new))


@policy_app.command("apply")
@handle_errors
def apply(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="policy TOML file"),
          dry_run: bool = typer.Option(False, "--dry-run", help="validate and show the diff; change nothing")):
    """Validate the whole file, show the diff, and apply it atomically as a new policy version."""
    from mxgate.policy.document import diff_policies
    from mxgate.policy.validate import check_policy

    new = _read(file)
    check_policy(new)
    store = policy_store()
    current = store.current()
    diff = diff_policies(current.policy, new, f"version {current.version}", str(file))
    echo(diff or "no change", nl=not diff)
    if dry_run:
        echo("dry run: nothing applied")
        return
    save_change(store, current, new, f" (applied {file.name})")


@policy_app.command("validate")
@handle_errors
def validate(file: Path = typer.Argument(..., exists=True, dir_okay=False)):
    """Check a policy file without touching the store."""
    from mxgate.policy.validate import check_policy, policy_warnings

    policy = _read(file)
    check_policy(policy)
    for w in policy_warnings(policy):
        warn(w)
    echo(f"{file}: valid")


@policy_app.command("export")
@handle_errors
def export(fmt: str = typer.Option("toml", "--format", help="toml | json | exo | postfix"),
           output: Optional[Path] = typer.Option(None, "--output", "-o", help="write to a file (postfix: a directory)"),
           version: Optional[int] = typer.Option(None, "--version", help="export an older version")):
    """Print the policy in force (or an older version) as TOML, JSON, Exchange Online PowerShell or Postfix config."""
    from mxgate.errors import PolicyFormatError
    from mxgate.policy.document import dump_toml
    from mxgate.policy.model import policy_to_dict

    store = policy_store(read=True)
    pv = store.get(version) if version is not None else store.current()
    if fmt == "toml":
        text = dump_toml(pv.policy)
    elif fmt == "json":
        import json

        text = json.dumps(policy_to_dict(pv.policy), indent=2) + "\n"
    elif fmt in ("exo", "postfix"):
        import importlib

        module = importlib.import_module(f"mxgate.export.{fmt}")
        text = module.export_cli(pv.policy, output)
        if text is None:
            return
    else:
        raise PolicyFormatError(f"--format: unknown format {fmt!r} (toml, json, exo, postfix)")
    if output:
        output.write_text(text, encoding="utf-8")
        echo(f"wrote {output}", stderr=True)
    else:
        sys.stdout.write(text)


@policy_app.command("history")
@handle_errors
def history(limit: int = typer.Option(20, "--limit"), json_out: bool = typer.Option(False, "--json")):
    """Policy versions, newest first: who changed what, and when."""
    rows = policy_store(read=True).history(limit)
    if json_out:
        print_json([{"version": r.version, "created_at": r.created_at, "actor": r.actor, "summary": r.summary} for r in rows])
        return
    print_table("Policy history", ["version", "time (UTC)", "actor", "summary"],
                [[r.version, _utc(r.created_at), r.actor, r.summary] for r in rows])


@policy_app.command("diff")
@handle_errors
def diff(old: int = typer.Argument(...), new: Optional[int] = typer.Argument(None)):
    """The difference between two policy versions (default: OLD against the one in force)."""
    from mxgate.policy.document import diff_policies

    store = policy_store(read=True)
    a = store.get(old)
    b = store.get(new) if new is not None else store.current()
    sys.stdout.write(diff_policies(a.policy, b.policy, f"version {a.version}", f"version {b.version}") or "no change\n")


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@org_app.command("show")
@handle_errors
def org_show(json_out: bool = typer.Option(False, "--json")):
    from mxgate.policy.model import object_to_dict

    pv = policy_store(read=True).current()
    data = object_to_dict(pv.policy.organization)
    if json_out:
        print_json(data)
        return
    print_table("Organization", ["setting", "value"], [[k, v] for k, v in data.items()])


@org_app.command("set")
@handle_errors
def org_set(name: Optional[str] = typer.Option(None, "--name"),
            authserv_id: Optional[str] = typer.Option(None, "--authserv-id"),
            arc_trusted_sealer: Optional[list[str]] = typer.Option(None, "--arc-trusted-sealer", help="repeatable; replaces the list"),
            dmarc_reject_action: Optional[str] = typer.Option(None, "--dmarc-reject-action"),
            dmarc_quarantine_action: Optional[str] = typer.Option(None, "--dmarc-quarantine-action")):
    """Change organisation settings (a new policy version)."""
    from mxgate.policy.edit import change_organization

    changes = {k: v for k, v in {
        "name": name, "authserv_id": authserv_id, "arc_trusted_sealers": split_list(arc_trusted_sealer),
        "dmarc_reject_action": dmarc_reject_action, "dmarc_quarantine_action": dmarc_quarantine_action}.items() if v is not None}
    store = policy_store()
    cur = store.current()
    save_change(store, cur, change_organization(cur.policy, changes))
