"""`mxgate probe` and `mxgate mx`: test any SMTP server from the outside, and look up MX records.

Owns: the command-line surface (option names, help, validation) and the exit codes:
with `--expect`, 0 when the outcome matches and 1 when it does not; without it, 0 when the
server accepted and 1 otherwise; 2 for usage errors (typer/click's own convention).

Must not know: SMTP or DNS details — it builds `ProbeOptions`, calls `mxgate.probe`, prints.
"""

from __future__ import annotations

import asyncio
import enum
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from mxgate.cli.common import echo
from mxgate.names import parse_hostport
from mxgate.probe.client import DEFAULT_PORT, ProbeOptions, run_probe
from mxgate.probe.expect import Expectation, ExpectationError, judge, parse_expect
from mxgate.probe.mx import DEFAULT_TIMEOUT as DNS_TIMEOUT, lookup_mx
from mxgate.probe.raw import ATTACKS, RawScript, parse_raw_file, run_raw
from mxgate.probe.render import (render_json, render_mx_json, render_mx_text, render_raw_json,
                                 render_raw_text, render_text)

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class StartTls(str, enum.Enum):
    auto = "auto"
    require = "require"
    off = "off"


def _expectation(value: Optional[str]) -> Optional[Expectation]:
    if value is None:
        return None
    try:
        return parse_expect(value)
    except ExpectationError as exc:
        raise typer.BadParameter(str(exc), param_hint="--expect") from None


def _target(value: str) -> tuple[str, int]:
    try:
        return parse_hostport(value, DEFAULT_PORT)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="HOST[:PORT]") from None


def probe(
    target: Annotated[str, typer.Argument(metavar="HOST[:PORT]", help="Server to test; [::1]:2525 for IPv6.")],
    mail_from: Annotated[str, typer.Option("--from", help="Envelope sender (MAIL FROM).")] = "probe@mxgate.invalid",
    rcpt_to: Annotated[Optional[list[str]], typer.Option("--to", help="Envelope recipient; repeatable.")] = None,
    send: Annotated[bool, typer.Option("--send/--no-send", help="Send a test message, or stop after RCPT.")] = False,
    ehlo: Annotated[str, typer.Option("--ehlo", help="Name given in EHLO.")] = "mxgate-probe.invalid",
    starttls: Annotated[StartTls, typer.Option("--starttls", help="auto: use when offered; require: fail without.")] = StartTls.auto,
    ca: Annotated[Optional[Path], typer.Option("--ca", help="CA file: verify the server certificate and name.")] = None,
    tls_name: Annotated[Optional[str], typer.Option("--tls-name", help="Name to send (SNI) and verify; default HOST.")] = None,
    client_cert: Annotated[Optional[Path], typer.Option("--client-cert", help="Client certificate (PEM).")] = None,
    client_key: Annotated[Optional[Path], typer.Option("--client-key", help="Client key (PEM); default: in --client-cert.")] = None,
    source_address: Annotated[Optional[str], typer.Option("--source-address", help="Bind this local IP.")] = None,
    proxy_source: Annotated[Optional[str], typer.Option("--proxy-source", help="Send a PROXY header claiming ADDR[:PORT].")] = None,
    proxy_version: Annotated[int, typer.Option("--proxy-version", min=1, max=2, help="PROXY protocol version.")] = 1,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds per network step.")] = 10.0,
    subject: Annotated[str, typer.Option("--subject", help="Subject of the test message.")] = "mxgate probe",
    body: Annotated[Optional[str], typer.Option("--body", help="Body of the test message.")] = None,
    expect: Annotated[Optional[str], typer.Option("--expect", metavar="accept|reject[:CODE][@STAGE]",
                                                  help="Exit 0 only when the outcome matches.")] = None,
    raw: Annotated[Optional[str], typer.Option("--raw", help=f"Raw mode, built-in: {', '.join(ATTACKS)}.")] = None,
    raw_file: Annotated[Optional[Path], typer.Option("--raw-file", help="Raw mode: byte steps from a file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of the transcript.")] = False,
) -> None:
    """Talk SMTP to HOST the way a sender would, print the transcript and a verdict."""
    host, port = _target(target)
    expectation = _expectation(expect)
    if client_key and not client_cert:
        raise typer.BadParameter("--client-key needs --client-cert", param_hint="--client-key")
    if raw and raw_file:
        raise typer.BadParameter("use --raw or --raw-file, not both", param_hint="--raw")
    if (raw or raw_file) and expectation is not None:
        raise typer.BadParameter("raw mode records replies; it has no --expect", param_hint="--expect")
    if expectation is not None and expectation.stage in ("rcpt", "data") and not rcpt_to and not (raw or raw_file):
        # Without a recipient the probe stops after MAIL FROM: it could never see a RCPT or DATA reply.
        raise typer.BadParameter(f"{expect} needs --to ADDRESS: without a recipient the probe stops after "
                                 f"MAIL FROM and never reaches {expectation.stage.upper()}", param_hint="--expect")
    if raw and raw not in ATTACKS:
        raise typer.BadParameter(f"unknown attack {raw!r}; known: {', '.join(ATTACKS)}", param_hint="--raw")
    opts = ProbeOptions(
        host=host, port=port, mail_from=mail_from, rcpt_to=tuple(rcpt_to or ()), send=send, ehlo=ehlo,
        starttls=starttls.value, ca_file=str(ca) if ca else None, tls_servername=tls_name,
        client_cert=str(client_cert) if client_cert else None,
        client_key=str(client_key) if client_key else None, source_address=source_address,
        proxy_source=proxy_source, proxy_version=1 if proxy_version == 1 else 2, timeout=timeout,
        subject=subject, body=body)
    if raw or raw_file:
        raise typer.Exit(_run_raw(opts, raw, raw_file, as_json))
    result = asyncio.run(run_probe(opts))
    if as_json:
        typer.echo(json.dumps(render_json(result, expectation), indent=2))
    else:
        echo(render_text(result, expectation), nl=False)
    if expectation is not None:
        ok, _ = judge(expectation, result)
    else:
        ok = result.outcome == "accept"
    raise typer.Exit(EXIT_OK if ok else EXIT_FAIL)


def _run_raw(opts: ProbeOptions, name: Optional[str], path: Optional[Path], as_json: bool) -> int:
    if path is not None:
        try:
            script: RawScript = parse_raw_file(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise typer.BadParameter(f"cannot read {path}: {exc}", param_hint="--raw-file") from None
    else:
        script = ATTACKS[name or ""](opts)
    result = asyncio.run(run_raw(opts, script))
    if as_json:
        typer.echo(json.dumps(render_raw_json(result), indent=2))
    else:
        echo(render_raw_text(result), nl=False)
    # Raw mode judges nothing: it fails only when the conversation could not happen.
    return EXIT_FAIL if result.error else EXIT_OK


def mx(
    domain: Annotated[str, typer.Argument(help="Domain whose mail exchangers to list.")],
    dns_servers: Annotated[Optional[list[str]], typer.Option("--dns", metavar="HOST:PORT",
                                                             help="DNS server; repeatable. Default: system resolver.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds for the whole lookup.")] = DNS_TIMEOUT,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """MX records of DOMAIN in preference order, with the A/AAAA addresses of each."""
    servers = tuple(dns_servers or ())
    for s in servers:
        try:
            parse_hostport(s, 53)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--dns") from None
    from mxgate.auth.dns import make_resolver

    try:
        resolver = make_resolver(servers, timeout)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--dns") from None
    result = asyncio.run(lookup_mx(domain, resolver.aio))
    if as_json:
        typer.echo(json.dumps(render_mx_json(result), indent=2))
    else:
        echo(render_mx_text(result), nl=False)
    reachable = any(h.addresses for h in result.hosts)
    raise typer.Exit(EXIT_OK if reachable and not result.error else EXIT_FAIL)


def register(app: typer.Typer) -> None:
    app.command("probe")(probe)
    app.command("mx")(mx)
