"""What every CLI command shares: the home directory, the store, output and exit codes.

Exit codes (issue 2): 0 success; 2 a validation or usage error (message on stderr, nothing
changed); 1 any other failure. No traceback ever reaches the admin: errors are one clear line.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import sys
from typing import Any, Callable

import typer
from rich.console import Console
from rich.table import Table

from mxgate.config.home import Home
from mxgate.errors import MxgateError, NotFoundError, PolicyError, StoreError

# Piped output (scripts, tests) gets wide tables instead of rich's 80-column default.
_WIDTH = None if sys.stdout.isatty() else 200
out = Console(highlight=False, soft_wrap=True, width=_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_OK, EXIT_FAILURE, EXIT_VALIDATION = 0, 1, 2

_state: dict[str, Any] = {"home": None, "config": None}


def set_home(path: str | None) -> None:
    _state["home"] = path


def set_config(path: str | None) -> None:
    """node.toml whose [store] url (and [node] name) the command uses; else MXGATE_CONFIG."""
    _state["config"] = path


def config_path() -> str | None:
    return _state["config"] or os.environ.get("MXGATE_CONFIG") or None


@functools.lru_cache(maxsize=None)
def _settings_for(path: str | None):
    from mxgate.config.node import load_settings

    return load_settings(path)


def settings():
    """The node settings the CLI acts for: the same file and MXGATE_* values `mxgate serve` reads."""
    return _settings_for(config_path())


def home_option() -> str | None:
    """The --home given on the command line (or MXGATE_HOME), without opening it."""
    return _state["home"]


def home() -> Home:
    return Home.open(_state["home"])


@functools.lru_cache(maxsize=None)
def _engine_for(url: str):
    from mxgate.store.db import open_engine

    return open_engine(url)


def store_url() -> str:
    """Same precedence as a running node (config/home.py Home.store_url), so the CLI and the
    node it administers always open the same database."""
    return home().store_url(settings().store.url)


def engine():
    return _engine_for(store_url())


def policy_store():
    from mxgate.store.policy_store import PolicyStore

    return PolicyStore(engine())


def actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = str(os.getuid())
    return f"cli:{user}"


def fail(message: str, code: int = EXIT_FAILURE) -> "typer.Exit":
    err.print(f"error: {message}", markup=False)
    return typer.Exit(code)


def handle_errors(fn: Callable) -> Callable:
    """Turn mxgate's errors into one line on stderr and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PolicyError as exc:
            raise fail(str(exc), EXIT_VALIDATION) from None
        except NotFoundError as exc:
            raise fail(str(exc), EXIT_FAILURE) from None
        except StoreError as exc:
            raise fail(str(exc), EXIT_FAILURE) from None
        except MxgateError as exc:
            raise fail(str(exc), EXIT_FAILURE) from None
        except OSError as exc:
            raise fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), EXIT_FAILURE) from None

    return wrapper


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    out.print(table)


def split_list(values: list[str] | None) -> list[str] | None:
    """Repeated options and comma-separated values both work: --sender-ip a,b --sender-ip c."""
    if values is None:
        return None
    items: list[str] = []
    for v in values:
        items += [x.strip() for x in v.split(",") if x.strip()]
    return items
