"""`mxgate connector list|show|new|set|remove` — inbound connectors, or outbound with --outbound.

Option names mirror New-InboundConnector / New-OutboundConnector parameters.
"""

from typing import Optional

import typer

from mxgate.cli.common import split_list
from mxgate.cli.objects import given, handle_errors, list_objects, save_edit, show_object
from mxgate.errors import PolicyFormatError

app = typer.Typer(help="Inbound connectors (or outbound with --outbound).", no_args_is_help=True)

OUTBOUND_ONLY = ("recipient_domains", "smart_hosts", "use_mx_record", "tls_settings", "tls_domain")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="connector")


def _kind(outbound: bool) -> str:
    return "outbound_connector" if outbound else "inbound_connector"


@app.command("list")
@handle_errors
def list_(outbound: bool = typer.Option(False, "--outbound"), json_out: bool = typer.Option(False, "--json")):
    """List connectors."""
    cols = (["name", "type", "enabled", "recipient_domains", "smart_hosts", "use_mx_record", "tls_settings"] if outbound else
            ["name", "type", "enabled", "sender_domains", "sender_ip_addresses", "restrict_domains_to_ip_addresses",
             "restrict_domains_to_certificate", "require_tls", "tls_sender_certificate_name"])
    list_objects(_kind(outbound), cols, json_out)


@app.command("show")
@handle_errors
def show(name: str, outbound: bool = typer.Option(False, "--outbound"), json_out: bool = typer.Option(False, "--json")):
    """Show every field of one connector."""
    show_object(_kind(outbound), name, json_out)


def _values(**kw) -> dict:
    lists = ("sender_domains", "sender_ip_addresses", "tls_sender_certificate_fingerprints", "associated_accepted_domains",
             "ef_skip_ips", "ef_users", "recipient_domains", "smart_hosts")
    out = {}
    for k, v in given(**kw).items():
        out[k] = split_list(v) if k in lists else v
    return out


def _check_direction(outbound: bool, values: dict) -> None:
    for k in values:
        if (k in OUTBOUND_ONLY) != outbound and k not in ("name", "type", "enabled", "comment"):
            side = "outbound" if k in OUTBOUND_ONLY else "inbound"
            raise PolicyFormatError(f"--{k.replace('_', '-')} applies to {side} connectors only")


# One option list serves `new` and `set`; None means "not given".
def _options(
    outbound: bool = typer.Option(False, "--outbound", help="an outbound connector"),
    type_: Optional[str] = typer.Option(None, "--type", help="partner | on_premises"),
    enabled: Optional[bool] = typer.Option(None, "--enabled/--disabled"),
    sender_domains: Optional[list[str]] = typer.Option(None, "--sender-domains", help="'*', '*.contoso.com', 'contoso.com'"),
    sender_ip_addresses: Optional[list[str]] = typer.Option(None, "--sender-ip-addresses", "--sender-ip", help="IPv4/IPv6 address or CIDR"),
    restrict_ip: Optional[bool] = typer.Option(None, "--restrict-domains-to-ip-addresses/--no-restrict-domains-to-ip-addresses"),
    restrict_cert: Optional[bool] = typer.Option(None, "--restrict-domains-to-certificate/--no-restrict-domains-to-certificate"),
    require_tls: Optional[bool] = typer.Option(None, "--require-tls/--no-require-tls"),
    tls_name: Optional[str] = typer.Option(None, "--tls-sender-certificate-name"),
    tls_pins: Optional[list[str]] = typer.Option(None, "--tls-sender-certificate-fingerprint", help="SHA-256 SPKI pin: hex, AB:CD:.. pairs, sha256:hex or the base64 that openssl prints; stored as lower-case hex (two for renewal overlap)"),
    associated: Optional[list[str]] = typer.Option(None, "--associated-accepted-domains"),
    comment: Optional[str] = typer.Option(None, "--comment"),
    ef_skip_last_ip: Optional[bool] = typer.Option(None, "--ef-skip-last-ip/--no-ef-skip-last-ip"),
    ef_skip_ips: Optional[list[str]] = typer.Option(None, "--ef-skip-ips"),
    ef_users: Optional[list[str]] = typer.Option(None, "--ef-users"),
    ef_test_mode: Optional[bool] = typer.Option(None, "--ef-test-mode/--no-ef-test-mode"),
    recipient_domains: Optional[list[str]] = typer.Option(None, "--recipient-domains"),
    smart_hosts: Optional[list[str]] = typer.Option(None, "--smart-hosts", help="host[:port]; several fail over in order"),
    use_mx_record: Optional[bool] = typer.Option(None, "--use-mx-record/--no-use-mx-record"),
    tls_settings: Optional[str] = typer.Option(None, "--tls-settings", help="encryption_only | certificate_validation | domain_validation"),
    tls_domain: Optional[str] = typer.Option(None, "--tls-domain"),
):
    return outbound, _values(
        type=type_, enabled=enabled, sender_domains=sender_domains, sender_ip_addresses=sender_ip_addresses,
        restrict_domains_to_ip_addresses=restrict_ip, restrict_domains_to_certificate=restrict_cert, require_tls=require_tls,
        tls_sender_certificate_name=tls_name, tls_sender_certificate_fingerprints=tls_pins,
        associated_accepted_domains=associated, comment=comment, ef_skip_last_ip=ef_skip_last_ip, ef_skip_ips=ef_skip_ips,
        ef_users=ef_users, ef_test_mode=ef_test_mode, recipient_domains=recipient_domains, smart_hosts=smart_hosts,
        use_mx_record=use_mx_record, tls_settings=tls_settings, tls_domain=tls_domain)


def _with_options(fn):
    """Give `fn(name, outbound, values)` the shared option list (typer reads the signature)."""
    import functools
    import inspect

    name_param = list(inspect.signature(fn).parameters.values())[0]
    params = [name_param] + list(inspect.signature(_options).parameters.values())

    @functools.wraps(fn)
    def wrapper(name: str, **kw):
        outbound, values = _options(**kw)
        return fn(name, outbound, values)

    wrapper.__signature__ = inspect.Signature(params)
    return wrapper


@app.command("new")
@handle_errors
@_with_options
def new(name: str, outbound: bool, values: dict):
    """Create a connector (New-InboundConnector / New-OutboundConnector)."""
    _check_direction(outbound, values)
    save_edit(_kind(outbound), "new", name, {"name": name, **values})


@app.command("set")
@handle_errors
@_with_options
def set_(name: str, outbound: bool, values: dict):
    """Change fields of a connector (Set-InboundConnector); lists given replace the old lists."""
    _check_direction(outbound, values)
    if not values:
        raise PolicyFormatError("nothing to change: give at least one option")
    save_edit(_kind(outbound), "set", name, values)


@app.command("remove")
@handle_errors
def remove(name: str, outbound: bool = typer.Option(False, "--outbound")):
    """Remove a connector (Remove-InboundConnector)."""
    save_edit(_kind(outbound), "remove", name)
