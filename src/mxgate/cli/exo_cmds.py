"""`mxgate exo audit|import FILES...`: an Exchange Online tenant's exported configuration, judged
against the guide's lock-down, or turned into an mxgate policy to rehearse it (issue 20).

Owns: the command-line surface and exit codes. audit: 0 no finding at or above `--fail-on`,
1 some, 2 input that cannot be read. import: 0 done (or nothing to change), 2 unreadable input
or a policy that fails validation (nothing applied).

Must not know: how EXO's JSON is read (exo/tenant.py), the rules (exo/audit.py) or the mapping
(exo/importer.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from mxgate.cli.common import EXIT_FAILURE, EXIT_OK, actor, err, handle_errors, home_path, out, policy_store

app = typer.Typer(help="Exchange Online: audit a tenant's exported configuration, or import it as a policy.",
                  no_args_is_help=True)

FILES_HELP = ("JSON from Get-AcceptedDomain, Get-InboundConnector, Get-OutboundConnector, Get-MxRecord "
              "(each `| ConvertTo-Json > file.json`); one object or an array per file")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="exo")


def _tenant(files: list[Path]):
    from mxgate.exo.tenant import read_tenant

    return read_tenant(files)


@app.command("audit")
@handle_errors
def audit_cmd(
    files: Annotated[list[Path], typer.Argument(help=FILES_HELP, dir_okay=False)],
    gateway: Annotated[Optional[list[str]], typer.Option(
        "--gateway", metavar="ADDRESS", help="An address the gateway delivers from (repeatable; IPv4 or IPv6). "
                                             "Default: the lock-down connector's own list.")] = None,
    fail_on: Annotated[str, typer.Option("--fail-on", help="Exit 1 when a finding is at least this severe: "
                                                           "critical, high, medium, low, info.")] = "low",
    as_json: Annotated[bool, typer.Option("--json", help="JSON for CI.")] = False,
) -> None:
    """Does the guide's lock-down hold in this tenant? Findings with the EXO parameter and the PowerShell fix."""
    import ipaddress

    from mxgate.exo.audit import SEVERITIES, audit, render_json, render_text

    if fail_on not in SEVERITIES:
        raise typer.BadParameter(f"use one of {', '.join(reversed(SEVERITIES))}", param_hint="--fail-on")
    for g in gateway or ():
        try:
            ipaddress.ip_network(g, strict=False)
        except ValueError:
            raise typer.BadParameter(f"{g!r} is not an IP address or prefix", param_hint="--gateway") from None
    report = audit(_tenant(files), tuple(gateway or ()))
    if as_json:
        typer.echo(json.dumps(render_json(report), indent=2))
    else:
        out.file.write(render_text(report))
    raise typer.Exit(EXIT_FAILURE if report.at_or_above(fail_on) else EXIT_OK)


@app.command("import")
@handle_errors
def import_cmd(
    files: Annotated[list[Path], typer.Argument(help=FILES_HELP, dir_okay=False)],
    apply: Annotated[bool, typer.Option("--apply", help="Save it as a new policy version (default: only show the diff).")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Also write the policy as TOML here.")] = None,
) -> None:
    """The tenant's accepted domains and connectors as an mxgate policy: validated, shown as a diff
    against the policy in force, applied only with --apply."""
    from mxgate.exo.importer import tenant_policy
    from mxgate.policy.document import diff_policies, dump_toml, summarize_change
    from mxgate.policy.model import Policy
    from mxgate.policy.validate import check_policy, policy_warnings

    tenant = _tenant(files)
    target = home_path(follow_running=not apply)  # without --apply this only reads
    if apply or target.is_dir():
        store = policy_store()
        current = store.current()
        base, label = current.policy, f"version {current.version}"
    else:
        store, current, base, label = None, None, Policy(), f"empty policy (no home at {target})"
    new, notes = tenant_policy(tenant, base)
    for n in notes:
        err.print(f"note: {n}", markup=False)
    check_policy(new)
    diff = diff_policies(base, new, label, "tenant")
    out.file.write(diff or "no change\n")
    if output:
        output.write_text(dump_toml(new), encoding="utf-8")
        err.print(f"wrote {output}", markup=False)
    if not apply:
        out.print("not applied (run again with --apply)", markup=False)
        return
    if current.version and current.policy == new:
        out.print(f"policy version {current.version} already matches; nothing applied", markup=False)
        return
    from mxgate.cli.policy_cmds import show_save_result

    saved = store.save(new, actor=actor(), summary=summarize_change(base, new) + " (imported from Exchange Online)",
                       base_version=current.version)
    show_save_result(saved, policy_warnings(new))

