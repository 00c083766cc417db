"""`mxgate tls-rpt report --domain D --day YYYY-MM-DD`: the RFC 8460 report of outbound TLS to a
domain on one day, from what this node recorded (queue/tlsrpt.py)."""

from __future__ import annotations

import re
import secrets

import typer

from mxgate.cli.common import handle_errors, home, print_json


def register(app: typer.Typer) -> None:
    rpt = typer.Typer(help="SMTP TLS reporting (RFC 8460) for outbound mail.", no_args_is_help=True)
    rpt.command("report")(report)
    app.add_typer(rpt, name="tls-rpt")


def _is_date(day: str) -> bool:
    """RFC 8460 §4.4's date-range is RFC 3339: 2026-02-30 matches the pattern but is no day."""
    from datetime import date

    try:
        date.fromisoformat(day)
    except ValueError:
        return False
    return True


@handle_errors
def report(domain: str = typer.Option(..., "--domain", help="the recipient domain the report is for"),
           day: str = typer.Option(..., "--day", help="UTC day, YYYY-MM-DD"),
           organization: str = typer.Option("mxgate", "--org", help="organization-name in the report"),
           contact: str = typer.Option("postmaster@localhost", "--contact", help="contact-info in the report")):
    """Print the JSON report (RFC 8460 §4.4) of this node's MX sessions to DOMAIN on DAY."""
    from mxgate.queue.tlsrpt import TlsReports, build_report

    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day) or not _is_date(day):
        raise typer.BadParameter("--day must be YYYY-MM-DD, a day that exists")
    results = TlsReports(home(read=True).spool / "tls-rpt").results(domain, day)
    print_json(build_report(results, domain=domain, day=day, organization=organization, contact=contact,
                            report_id=f"{day}.{domain.lower()}.{secrets.token_hex(6)}@mxgate"))
