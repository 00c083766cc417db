"""What every CLI command shares: the home directory, the store, output and exit codes.

Exit codes (issue 2): 0 success; 2 a validation or usage error (message on stderr, nothing
changed); 1 any other failure. No traceback ever reaches the admin: errors are one clear line.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

import typer

from mxgate.config.home import DEFAULT_HOME, Home
from mxgate.errors import MxgateError, NotFoundError, PolicyError, StoreError

# Terminal control characters (C0 but tab and newline, DEL, C1): an ESC or CSI byte from wire data
# could recolour, retitle or rewrite the admin's terminal (and OSC 8 fake a link).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(value: Any) -> str:
    """The one escaping helper for everything the CLI prints: control characters become visible
    `\\xNN` escapes. Rich markup is never interpreted either (see SafeConsole, print_table)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", "" if value is None else str(value))


def _safe_console(**kwargs: Any):
    from rich.console import Console
    from rich.text import Text

    class SafeConsole(Console):
        """A Rich console that prints strings as plain text: senders like `"[/]"@e.test` or
        `[link=...]` stay literal, and control characters are escaped (terminal_safe)."""

        def print(self, *objects: Any, **kwargs: Any) -> None:  # noqa: A003 (Rich's name)
            kwargs["markup"] = False
            super().print(*(Text(terminal_safe(o)) if isinstance(o, str) else o for o in objects), **kwargs)

    return SafeConsole(**kwargs)


class _LazyConsole:
    """The SafeConsole, made on first use: importing Rich costs ~50 ms, which a command printing
    only plain lines (echo, warn, fail) does not pay (issue 19: a policy change in < 200 ms)."""

    def __init__(self, stderr: bool):
        self._stderr = stderr
        self._console = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            if self._stderr:
                self._console = _safe_console(stderr=True, highlight=False, soft_wrap=True)
            else:  # piped output (scripts, tests) gets wide tables instead of rich's 80-column default
                self._console = _safe_console(highlight=False, soft_wrap=True,
                                              width=None if sys.stdout.isatty() else 200)
        return getattr(self._console, name)


out = _LazyConsole(stderr=False)
err = _LazyConsole(stderr=True)


def echo(text: str, nl: bool = True, *, stderr: bool = False) -> None:
    """Plain (non-Rich) output — a probe's transcript of remote replies, a saved change's one
    line — escaped likewise."""
    typer.echo(terminal_safe(text), nl=nl, err=stderr)


def warn(message: str) -> None:
    echo(f"warning: {message}", stderr=True)

EXIT_OK, EXIT_FAILURE, EXIT_VALIDATION = 0, 1, 2

_state: dict[str, Any] = {"home": None, "config": None}


def set_home(path: str | None) -> None:
    _state["home"] = path
    _state.pop("followed", None)


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


def home(read: bool = False) -> Home:
    """The home directory; `read=True` for commands that only read state: a home that does not
    exist is refused (exit 2) instead of being created empty, which would show empty results."""
    if read:
        require_home()
    _refuse_file_as_home(home_path())
    return Home.open(home_path())


def home_path(follow_running: bool = False) -> Path:
    """--home, else MXGATE_HOME, else ./mxgate-data. A command that only reads (`follow_running`),
    run where there is no ./mxgate-data, uses the home of the one node this user runs instead (said
    on stderr), so `mxgate trace` / `verify` work as the README writes them from any directory.
    Commands that write never follow: they create ./mxgate-data as documented."""
    explicit = _state["home"] or os.environ.get("MXGATE_HOME")
    if explicit:
        return Path(explicit).absolute()
    default = Path(DEFAULT_HOME).absolute()
    if default.is_dir():
        return default
    if follow_running and "followed" not in _state:
        from mxgate.config.running import running_homes

        running = running_homes()
        _state["followed"] = running[0] if len(running) == 1 else None
        if _state["followed"] is not None:
            err.print(f"note: using the home of the running node, {_state['followed']} (no {DEFAULT_HOME} here)",
                      markup=False)
    return _state.get("followed") or default


def _refuse_file_as_home(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise fail(f"home directory {root} is not a directory", EXIT_VALIDATION)


def require_home() -> None:
    root = home_path(follow_running=True)
    if root.is_dir():
        return
    _refuse_file_as_home(root)
    from mxgate.config.running import running_homes

    running = [h for h in running_homes() if h != root]
    if running:
        hint = (f"a running node's home is {running[0]}: add --home {running[0]}" if len(running) == 1 else
                "running nodes' homes: " + ", ".join(map(str, running)) + "; add --home with one of them")
    else:
        hint = ("no running node found; start one with `mxgate serve` (home ./mxgate-data) or `mxgate demo "
                "--keep-running` (home ./mxgate-demo), or pass --home DIR / MXGATE_HOME")
    raise fail(f"home directory {root} does not exist; {hint}", EXIT_VALIDATION)


@functools.lru_cache(maxsize=None)
def _engine_for(url: str):
    from mxgate.store.db import open_engine

    return open_engine(url)


def _configured_store_url() -> str:
    """The settings' [store] url. With no node.toml and no MXGATE_<SECTION>__<FIELD> value the
    settings are the schema's defaults (url ""), known without loading the schema."""
    from mxgate.config.sources import environment_settings

    if config_path() is None and not environment_settings():
        return ""
    return settings().store.url


def store_url() -> str:
    """Same precedence as a running node (config/home.py Home.store_url), so the CLI and the
    node it administers always open the same database."""
    return home().store_url(_configured_store_url())


def _refuse_missing_home(read: bool) -> None:
    """With the default SQLite store a command that only reads refuses a missing home rather
    than creating it (a configured [store] url needs no home)."""
    if read and not (_configured_store_url() or os.environ.get("MXGATE_STORE_URL")):
        require_home()


def engine(read: bool = False):
    """The store as an SQLAlchemy engine, the schema brought to the current revision."""
    _refuse_missing_home(read)
    return _engine_for(store_url())


def policy_store(read: bool = False):
    """The policy store. On an embedded SQLite store whose schema is current it runs on stdlib
    sqlite3 (store/sqlite.py), sparing the command SQLAlchemy's import; otherwise on engine()."""
    from mxgate.store.policy_store import PolicyStore
    from mxgate.store.sqlite import open_current

    _refuse_missing_home(read)
    url = store_url()
    return PolicyStore(open_current(url) or _engine_for(url))


def actor() -> str:
    import getpass

    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = str(os.getuid())
    return f"cli:{user}"


def fail(message: str, code: int = EXIT_FAILURE) -> "typer.Exit":
    echo(f"error: {message}", stderr=True)
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
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(terminal_safe(title)), title_justify="left")
    for col in columns:
        table.add_column(Text(terminal_safe(col)), overflow="fold")
    for row in rows:
        table.add_row(*[Text(terminal_safe(v)) for v in row])  # Text: a cell is never parsed as markup
    out.print(table)


def split_list(values: list[str] | None) -> list[str] | None:
    """Repeated options and comma-separated values both work: --sender-ip a,b --sender-ip c."""
    if values is None:
        return None
    items: list[str] = []
    for v in values:
        items += [x.strip() for x in v.split(",") if x.strip()]
    return items
