"""`mxgate serve`, `mxgate status`, `mxgate config reference`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Optional

import typer

from mxgate.cli.common import engine, handle_errors, home, out, print_json, print_table


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("status")(status)
    config_app = typer.Typer(help="Node settings.", no_args_is_help=True)
    config_app.command("reference")(config_reference)
    app.add_typer(config_app, name="config")


@handle_errors
def serve(config: Optional[Path] = typer.Option(None, "--config", "-c", help="node.toml; without it: the embedded default"),
          role: Optional[list[str]] = typer.Option(None, "--role", help="run only these roles (mailbox, gateway, submission, admin)"),
          mailbox_listen: Optional[list[str]] = typer.Option(None, "--mailbox-listen", help="host:port (repeatable)"),
          reject_stage: Optional[str] = typer.Option(None, "--reject-stage", help="rcpt | connect"),
          name: Optional[str] = typer.Option(None, "--name", help="node name")):
    """Run the node: the roles in node.toml (default: a locked-down mailbox server on loopback)."""
    from mxgate.config.node import load_settings
    from mxgate.logs import setup_logging
    from mxgate.server.node import Node

    overrides = {}
    if role:
        for r in ("mailbox", "gateway", "submission", "admin"):
            overrides[f"roles.{r}"] = r in role
    if mailbox_listen:
        overrides["mailbox.listen"] = mailbox_listen
    if reject_stage:
        overrides["mailbox.reject_stage"] = reject_stage
    if name:
        overrides["node.name"] = name
    from mxgate.cli.common import config_path

    settings = load_settings(config or config_path(), overrides)
    setup_logging(settings.log.level, settings.log.file)
    node = Node(settings, home())

    async def main() -> None:
        await node.start()
        out.print(node.describe(), markup=False)
        out.file.flush()
        await node.run_until_stopped()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


@handle_errors
def status(json_out: bool = typer.Option(False, "--json")):
    """Every node using this store: roles, listeners, last heartbeat, the policy version it enforces."""
    from mxgate.server.node import read_status
    from mxgate.store.policy_store import PolicyStore

    rows = read_status(engine())
    latest = PolicyStore(engine()).latest_version_number()
    if json_out:
        print_json({"policy_version": latest, "nodes": rows})
        return
    out.print(f"policy version in store: {latest}", markup=False)
    print_table("Nodes", ["node", "alive", "roles", "listeners", "enforces version", "heartbeat"],
                [[r["name"], "yes" if r["alive"] else "no", ", ".join(r["roles"]),
                  "; ".join(f"{k}: {' '.join(v)}" for k, v in r["listeners"].items()), r["policy_version"],
                  f"{time.time() - r['heartbeat']:.1f}s ago" if r["heartbeat"] else "stopped"] for r in rows])


def config_reference():
    """Print the node settings reference (Markdown), generated from the schema."""
    from mxgate.config.node import settings_reference

    out.file.write(settings_reference())
