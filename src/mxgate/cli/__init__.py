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
]


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(app)


def main() -> None:
    _register_all()
    app()
