"""The `mxgate` command line: one sub-command group per noun.

Each module in this package defines `register(app)`; this file only assembles them.
Exit codes: 0 success, 2 validation error (message on stderr, nothing changed), 1 other failure.
"""

from __future__ import annotations

import importlib

import typer

from mxgate.cli import coercion

coercion.install()  # parameters of plain types without importing pydantic (cli/coercion.py)

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
    "mxgate.cli.tlsrpt_cmds",
    "mxgate.cli.exo_cmds",
    "mxgate.cli.dev_cmds",
]


# The top-level commands each module registers (a test keeps this in step with register()):
# a command line naming one imports only its module — a policy change should not pay for
# importing the probe, the trace queries and the TLS tooling first (issue 19: CLI < 200 ms).
_COMMANDS = {
    "policy": "policy_cmds", "org": "policy_cmds", "domain": "domain_cmds", "mailbox": "mailbox_cmds",
    "connector": "connector_cmds", "serve": "serve_cmds", "status": "serve_cmds", "config": "serve_cmds",
    "service": "service_cmds", "tls": "tls_cmds", "backup": "backup_cmds", "restore": "backup_cmds",
    "demo": "demo_cmds", "trace": "trace_cmds", "queue": "queue_cmds", "gateway": "queue_cmds",
    "probe": "probe_cmds", "mx": "probe_cmds", "verify": "verify_cmds", "quarantine": "quarantine_cmds",
    "admin": "admin_cmds", "app-credential": "credential_cmds", "dkim": "credential_cmds", "keys": "key_cmds",
    "tls-rpt": "tlsrpt_cmds", "exo": "exo_cmds", "dev": "dev_cmds",
}
_GLOBAL_OPTIONS_WITH_VALUE = ("--home", "--config")


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(app)


def _register_for(args: list[str]) -> None:
    """Register the module of the command `args` names, or every module (help, a typo)."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in _GLOBAL_OPTIONS_WITH_VALUE else 1
    module = _COMMANDS.get(args[i]) if i < len(args) else None
    if module is None:
        _register_all()
    else:
        importlib.import_module(f"mxgate.cli.{module}").register(app)


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

    args = _hoist_home(list(sys.argv[1:] if argv is None else argv))
    _register_for(args)
    app(args=args, prog_name="mxgate")
