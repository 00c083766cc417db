"""`mxgate dev dns` — tools for demos and tests, not for production.

Owns: the command line of the development DNS server (mxgate/devtools/dnsserver.py
`ZoneFileServer`): where it listens (loopback only: an authoritative server for made-up zones
must never answer the network), which zone file, how often it looks for changes. It runs in the
foreground until interrupted; SIGHUP reloads at once.
"""

from __future__ import annotations

import ipaddress
import signal

import typer

from mxgate.cli.common import EXIT_VALIDATION, fail, handle_errors, out

app = typer.Typer(help="Development tools: a DNS server for demos and tests.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="dev")


def _loopback(listen: str) -> tuple[str, int]:
    from mxgate.errors import ConfigError
    from mxgate.server.sockets import parse_listen

    try:
        host, port = parse_listen(listen)
        loopback = ipaddress.ip_address(host).is_loopback
    except (ConfigError, ValueError):
        loopback = False
    if not loopback:
        raise fail(f"--listen {listen!r}: give a loopback address and port (127.0.0.1:5353 or [::1]:5353); "
                   "this server answers for made-up zones and must not face a network", EXIT_VALIDATION)
    return host, port


@app.command("dns")
@handle_errors
def dns_cmd(listen: str = typer.Option("127.0.0.1:5353", "--listen", help="loopback host:port (UDP and TCP)"),
            zone: str = typer.Option(..., "--zone", help="zone file: BIND master file, or .toml/.json tables by owner name"),
            origin: str = typer.Option(None, "--origin", help="$ORIGIN for a BIND file that does not set one"),
            poll: float = typer.Option(1.0, "--poll", min=0.01, help="seconds between checks of the file's mtime"),
            drop: float = typer.Option(0.0, "--drop", min=0.0, max=1.0,
                                       help="share of queries never answered (a lossy resolver; seeded)"),
            negative_soa: bool = typer.Option(True, "--negative-soa/--no-negative-soa",
                                              help="the zone's SOA in negative answers (RFC 2308 §3)")):
    """Serve a zone file on loopback, reload it when it changes, answer misses with its SOA (RFC 2308)."""
    from mxgate.devtools.dnsserver import ZoneFileServer
    from mxgate.devtools.dnszone import ZoneFileError

    host, port = _loopback(listen)

    def reloaded(z, error) -> None:
        out.print(f"reload failed, previous zone kept: {error}" if error else f"reloaded {zone}: {len(z)} records",
                  markup=False, highlight=False)
        out.file.flush()

    # Signals are taken with sigwait, not handlers: an Event set from a handler can deadlock when
    # the signal lands while the main thread holds that Event's lock. Blocked before the server's
    # threads start, so they inherit the mask and no signal is delivered to them.
    signals = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        server = ZoneFileServer(zone, host, port, origin=origin, poll_interval=poll, on_reload=reloaded)
    except ZoneFileError as exc:
        raise fail(str(exc), EXIT_VALIDATION) from None
    server.set_negative_soa(negative_soa)
    if drop:
        server.set_drop(drop, seed=15)
    out.print(f"serving {zone} ({len(server.zone)} records) on {server.address} (udp+tcp); "
              f"reloading on change (every {poll:g}s) or SIGHUP", markup=False, highlight=False)
    out.file.flush()
    try:
        while signal.sigwait(signals) == signal.SIGHUP:
            server.check_reload()
    finally:
        server.close()
