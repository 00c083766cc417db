"""Change notifications between nodes sharing one database: PostgreSQL LISTEN/NOTIFY.

Owns: the channel names, sending a notification inside the writer's transaction (so it is
delivered exactly when the change commits, never before, never for a rolled-back change), and
`ChangeListener`, a thread holding one autocommitting psycopg connection that LISTENs and calls
back on each notification. Must not know what changed or what a listener does about it.

SQLite has no such mechanism; there `notify` does nothing and `ChangeListener.start` returns
False, and callers rely on their polling (which they keep on PostgreSQL too, as the fallback
when the LISTEN connection is down: a restart or fail-over of the database loses notifications).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # SQLAlchemy is imported where it is used: the CLI names the channel without it
    from sqlalchemy.engine import Connection, Engine

POLICY_CHANNEL = "mxgate_policy"
RECONNECT_DELAY = 1.0  # seconds between attempts to re-establish a lost LISTEN connection
WAIT_SLICE = 0.5  # seconds the listener blocks before checking whether it should stop


def _log():
    # Imported here, not at the top: the CLI imports this module for POLICY_CHANNEL only.
    import logging

    return logging.getLogger("mxgate.store.notify")


def supports_notify(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def notify(conn: Connection, channel: str, payload: str = "") -> None:
    """Queue a notification in `conn`'s transaction; PostgreSQL sends it at COMMIT."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy import text

        conn.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload})


def _conninfo(engine: Engine) -> str:
    # psycopg takes libpq URLs; SQLAlchemy's carries a "+psycopg" driver suffix to drop.
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class ChangeListener:
    """LISTEN on `channels`; `callback(channel, payload)` runs on the listener thread."""

    def __init__(self, engine: Engine, channels: tuple[str, ...], callback: Callable[[str, str], None]):
        self.engine = engine
        self.channels = channels
        self.callback = callback
        self.connected = threading.Event()  # set while LISTEN is active (tests and status read it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn = None

    def start(self) -> bool:
        """Start listening; False (and no thread) where the database has no LISTEN/NOTIFY."""
        if not supports_notify(self.engine):
            return False
        self._thread = threading.Thread(target=self._run, name="store-listen", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=WAIT_SLICE + 2)

    def _run(self) -> None:
        import psycopg
        from psycopg import sql

        while not self._stop.is_set():
            try:
                with psycopg.connect(_conninfo(self.engine), autocommit=True, connect_timeout=5,
                                     application_name="mxgate-listen") as conn:
                    for channel in self.channels:
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self.connected.set()
                    # A change may have landed while we were (re)connecting: one wake-up covers it.
                    self._deliver(self.channels[0], "")
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=WAIT_SLICE):
                            self._deliver(n.channel, n.payload)
            except Exception as exc:  # database restarting or unreachable: polling covers the gap
                if not self._stop.is_set():
                    _log().warning("LISTEN connection lost (%s); polling until it is back", exc)
            finally:
                self.connected.clear()
            self._stop.wait(RECONNECT_DELAY)

    def _deliver(self, channel: str, payload: str) -> None:
        try:
            self.callback(channel, payload)
        except Exception:
            _log().exception("change notification handler failed")
