"""The `mxgate` command line: one sub-command group per noun.

Each module in this package defines `register(app)`; this file only assembles them.
Exit codes: 0 success, 2 validation error (message on stderr, nothing changed), 1 other failure.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="mxgate",
    help="mxgate: mail security gateway and locked-down mailbox server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules registering commands, in the order mail flows. A module that is missing is a bug,
# not an optional feature, so import errors are not swallowed.
_COMMAND_MODULES = [
    "mxgate.cli.policy_cmds",
    "mxgate.cli.domain_cmds",
    "mxgate.cli.mailbox_cmds",
    "mxgate.cli.connector_cmds",
    "mxgate.cli.serve_cmds",
    "mxgate.cli.service_cmds",
    "mxgate.cli.tls_cmds",
    "mxgate.cli.backup_cmds",
    "mxgate.cli.demo_cmds",
    "mxgate.cli.trace_cmds",
    "mxgate.cli.queue_cmds",
    "mxgate.cli.probe_cmds",
    "mxgate.cli.verify_cmds",
    "mxgate.cli.quarantine_cmds",
    "mxgate.cli.admin_cmds",
    "mxgate.cli.credential_cmds",
    "mxgate.cli.key_cmds",
    "mxgate.cli.exo_cmds",
    "mxgate.cli.dev_cmds",
]


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(app)


@app.callback()
def _global(home: str = typer.Option(None, "--home", envvar="MXGATE_HOME",
                                      help="home directory (database, spool, maildirs, certificates); default ./mxgate-data"),
            config: str = typer.Option(None, "--config", envvar="MXGATE_CONFIG",
                                       help="node.toml of the node this command administers (its [store] url, [node] name)")):
    from mxgate.cli.common import set_config, set_home

    set_home(home)
    set_config(config)


def _hoist_home(argv: list[str]) -> list[str]:
    """Accept --home anywhere on the line (`mxgate policy apply f --home d`), as the docs promise."""
    rest, hoisted, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--home" and i + 1 < len(argv):
            hoisted += [a, argv[i + 1]]
            i += 2
            continue
        if a.startswith("--home="):
            hoisted.append(a)
        else:
            rest.append(a)
        i += 1
    return hoisted + rest


def main(argv: list[str] | None = None) -> None:
    import sys

    _register_all()
    app(args=_hoist_home(list(sys.argv[1:] if argv is None else argv)), prog_name="mxgate")
