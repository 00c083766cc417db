"""`mxgate verify`: run the lock-down matrix against a running mailbox server (issue 7).

Owns: the command-line surface and exit codes: 0 when every row that ran passed, 1 when any row
failed (or none could run, or the policy has no lock-down to test), 2 for usage errors (no policy
in the store). The policy comes from the store (`--home`) or,
with `--policy FILE`, from a TOML file — so a server mxgate does not run (e.g. a Postfix
configured by `mxgate policy export --format postfix`) can be verified too.

Must not know: SMTP or how rows are chosen (mxgate.probe.verify).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from mxgate.cli.common import EXIT_VALIDATION, echo, fail, handle_errors, home_path, policy_store
from mxgate.cli.common import settings as node_settings

EXIT_OK, EXIT_FAIL = 0, 1


def _target(value: str, hint: str):
    from mxgate.names import parse_hostport
    from mxgate.probe.verify import Target

    try:
        host, port = parse_hostport(value, 25)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=hint) from None
    return Target(host, port)


def _address(value: str, hint: str) -> str:
    """A source address to bind ("" = the default): an IP literal, named when it is not one."""
    import ipaddress

    if value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not an IP address", param_hint=hint) from None
    return value


@handle_errors
def verify(
    target: Annotated[str, typer.Option("--target", metavar="HOST:PORT", help="The mailbox server to test.")] = "127.0.0.1:2525",
    target6: Annotated[Optional[str], typer.Option("--target6", metavar="[V6]:PORT",
                                                   help="Its IPv6 listener, for the IPv6 rows.")] = None,
    policy_file: Annotated[Optional[Path], typer.Option("--policy", exists=True, dir_okay=False,
                                                        help="Policy TOML file instead of the policy in force.")] = None,
    attacker: Annotated[str, typer.Option("--attacker", help="Source address of the bypass attempts; default: "
                                                                 "the first of 127.0.0.66, 127.0.66.66, ... no connector lists.")] = "",
    attacker6: Annotated[str, typer.Option("--attacker6", help="IPv6 source of the bypass attempts (default ::1).")] = "",
    ca: Annotated[Optional[Path], typer.Option("--ca", help="CA file to verify the server certificate.")] = None,
    tls_name: Annotated[Optional[str], typer.Option("--tls-name", help="Server name to verify (with --ca).")] = None,
    client_cert: Annotated[Optional[Path], typer.Option("--client-cert", help="The certificate connectors' certificate.")] = None,
    client_key: Annotated[Optional[Path], typer.Option("--client-key")] = None,
    wrong_cert: Annotated[Optional[Path], typer.Option("--wrong-cert", help="A certificate the server must refuse.")] = None,
    wrong_key: Annotated[Optional[Path], typer.Option("--wrong-key")] = None,
    send: Annotated[bool, typer.Option("--send/--no-send", help="Send a test message on the accepted rows.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds per network step.")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for CI.")] = False,
) -> None:
    """Run the lock-down matrix: bypass refused, gateway accepted, clear text and wrong certificates refused."""
    from mxgate.policy.document import read_policy_file
    from mxgate.probe.verify import VerifySettings, failed, plan_matrix, render_json, render_table, run_matrix

    settings = VerifySettings(
        target=_target(target, "--target"), target6=_target(target6, "--target6") if target6 else None,
        attacker=_address(attacker, "--attacker"), attacker6=_address(attacker6, "--attacker6"), ca_file=str(ca) if ca else None, tls_servername=tls_name,
        client_cert=str(client_cert) if client_cert else None, client_key=str(client_key) if client_key else None,
        wrong_cert=str(wrong_cert) if wrong_cert else None, wrong_key=str(wrong_key) if wrong_key else None,
        send=send, timeout=timeout)
    from mxgate.policy.attribution import compile_policy, connect_stage_fallback

    if policy_file:
        policy = read_policy_file(policy_file)
    else:
        pv = policy_store(read=True).current()
        if not pv.version:
            raise fail(f"no policy in the store of {home_path()}: nothing says what to verify; apply one with "
                       "`mxgate policy apply FILE`, or pass --policy FILE (or the --home of the node to test)",
                       EXIT_VALIDATION)
        policy = pv.policy
    rows = plan_matrix(policy, settings)
    if not rows:
        raise fail("the policy has no partner inbound connector that names its senders (sender_ip_addresses or "
                   "tls_sender_certificate_name): there is no lock-down to verify; create one with "
                   "`mxgate connector new`", EXIT_FAIL)
    # The node's own setting (same --config / MXGATE_* as `mxgate serve`): where refusals happen.
    fallback = connect_stage_fallback(compile_policy(policy, 0), node_settings().mailbox.reject_stage)
    notes = [fallback] if fallback else []
    results = asyncio.run(run_matrix(rows))
    if as_json:
        typer.echo(json.dumps(render_json(results, notes), indent=2))
    else:
        echo(render_table(results, notes), nl=False)
    raise typer.Exit(EXIT_FAIL if failed(results) else EXIT_OK)


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)
