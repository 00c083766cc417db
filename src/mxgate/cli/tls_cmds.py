"""`mxgate tls status`: each listener's certificate, expiry and SPKI pin (docs/operations.md)."""

from __future__ import annotations

import socket
import ssl
from typing import Any

import typer

from mxgate.cli.common import handle_errors, home, out, print_json, settings

ROLES = ("mailbox", "gateway", "submission")


def register(app: typer.Typer) -> None:
    tls_app = typer.Typer(help="Listener certificates.", no_args_is_help=True)
    tls_app.command("status")(status)
    app.add_typer(tls_app, name="tls")


def listener_certificates(node_settings, the_home) -> list[dict[str, Any]]:
    """One row per enabled listener: the certificate files it serves and what they hold."""
    from mxgate.server.tls import certificate_info

    rows = []
    listeners = [(role, getattr(node_settings, role)) for role in ROLES if getattr(node_settings.roles, role)]
    if node_settings.roles.admin and node_settings.admin.tls_cert:  # the admin centre over HTTPS
        listeners.append(("admin", node_settings.admin))
    for role, section in listeners:
        cert = section.tls_cert or str(the_home.certs / "server.pem")
        key = section.tls_key or str(the_home.certs / "server.key")
        listen = [section.listen] if isinstance(section.listen, str) else list(section.listen)
        row: dict[str, Any] = {"listener": role, "listen": listen, "cert": cert, "key": key}
        try:
            info = certificate_info(cert)
        except FileNotFoundError:
            row["error"] = "no certificate yet (the generated one is created on first start)" if not section.tls_cert \
                else f"{cert}: no such file"
        except (OSError, ValueError) as exc:
            row["error"] = f"{cert}: not a PEM certificate ({exc})"
        else:
            row.update(subject=info.subject, dns_names=list(info.dns_names), not_after=info.not_after.isoformat(),
                       days_left=round(info.days_left(), 1), spki_sha256=info.spki_sha256)
        rows.append(row)
    return rows


def served_spki(listen: str, timeout: float = 5.0, starttls: bool = True) -> str:
    """SPKI pin of the certificate a running listener presents after STARTTLS (or at once, for
    HTTPS), or the error."""
    from mxgate.server.sockets import parse_listen
    from mxgate.server.tls import peer_certificate

    host, port = parse_listen(listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # reading the pin, not trusting it
            if not starttls:
                with ctx.wrap_socket(sock, server_hostname=None) as tls:
                    return peer_certificate(tls.getpeercert(binary_form=True)).spki_sha256
            f = sock.makefile("rb")

            def reply() -> int:
                while True:
                    line = f.readline()
                    if not line:
                        raise ConnectionError("connection closed")
                    if line[3:4] != b"-":
                        return int(line[:3])

            if reply() != 220:
                return "error: no greeting"
            sock.sendall(b"EHLO tls-status.mxgate\r\n")
            reply()
            sock.sendall(b"STARTTLS\r\n")
            if reply() != 220:
                return "error: STARTTLS refused"
            with ctx.wrap_socket(sock, server_hostname=host) as tls:
                return peer_certificate(tls.getpeercert(binary_form=True)).spki_sha256
    except (OSError, ValueError, ConnectionError) as exc:
        return f"error: {exc}"


@handle_errors
def status(live: bool = typer.Option(False, "--live", help="also connect to each listener and show the pin it serves"),
           json_out: bool = typer.Option(False, "--json")):
    """Each listener's certificate: subject, names, expiry (days left) and SPKI pin (SHA-256)."""
    rows = listener_certificates(settings(), home(read=True))
    if live:
        for row in rows:
            if row["listen"]:
                row["served_spki_sha256"] = served_spki(row["listen"][0], starttls=row["listener"] != "admin")
    if json_out:
        print_json({"listeners": rows})
        return
    # One block per listener, not a table: pins and paths stay whole for copying into a connector.
    for r in rows:
        out.print(f"{r['listener']} ({' '.join(r['listen']) or 'no address'})", markup=False)
        fields = [("certificate", r["cert"]), ("key", r["key"])]
        if "error" in r:
            fields.append(("error", r["error"]))
        else:
            fields += [("subject", r["subject"]), ("names", ", ".join(r["dns_names"]) or "-"),
                       ("expires", f"{r['not_after']} ({r['days_left']} days left)"), ("SPKI sha256", r["spki_sha256"])]
            if live:
                served = r.get("served_spki_sha256", "")
                fields.append(("served", "same" if served == r["spki_sha256"] else
                               f"{served} (differs: the node has not loaded the files; see its log)"))
        for name, value in fields:
            out.print(f"  {name:<12} {value}", markup=False)
