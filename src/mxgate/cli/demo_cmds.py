"""`mxgate demo` — the guide's story with real SMTP sessions on loopback (see mxgate/demo.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from mxgate.cli.common import handle_errors, out


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


@handle_errors
def demo(home: Path = typer.Option(Path("./mxgate-demo"), "--demo-home",
                                   help="directory for the demo's own store and Maildirs (recreated each run)"),
         keep_running: bool = typer.Option(False, "--keep-running", help="leave the node (and the admin centre) up")):
    """Start gateway and mailbox server on loopback and walk through the lock-down, step by step."""
    from mxgate.demo import run_demo
    from mxgate.logs import setup_logging

    setup_logging("warning")

    def say(text: str) -> None:
        out.print(text, markup=False, highlight=False)
        out.file.flush()

    try:
        code = asyncio.run(run_demo(home.absolute(), keep_running, say))
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)
