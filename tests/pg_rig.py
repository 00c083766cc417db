"""A throwaway PostgreSQL cluster on loopback for the tests that need several nodes on one store.

Owns: finding Debian's server binaries (scripts/install-system-deps.sh installs them; the
system service stays stopped), `initdb` into a temporary directory, `pg_ctl start` on a free
127.0.0.1 port, a fresh database per test, and removing it all afterwards. Must not know
mxgate's schema: the store migrates itself when a node or the CLI opens the URL.

As root, PostgreSQL refuses to run, so the server commands run as the `postgres` user via
`runuser` and the data directory is chowned to it. fsync is off: these tests kill mxgate
processes, never PostgreSQL, so the server's own crash safety is not under test.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from rig import free_port

START_TIMEOUT = 30.0


class PgUnavailable(RuntimeError):
    """The PostgreSQL server binaries are missing: say how to get them."""


def server_bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise PgUnavailable("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
                            "run scripts/install-system-deps.sh (Debian package 'postgresql')")
    return Path(found[-1]).parent


class PgCluster:
    """One postmaster on 127.0.0.1:<port>, trust authentication, superuser `postgres`."""

    def __init__(self) -> None:
        self.bin = server_bin_dir()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="mxgate-pg-"))  # not under pytest's 0700 tmp
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0

    # --- running server commands as the right user ----------------------------------------
    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        # cwd "/": the postgres user may not be able to enter the directory the tests run from
        # (a fresh clone under /root), and initdb gives up when it cannot resolve its own path.
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/")
        if result.returncode != 0:
            log = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()}\n{log}")
        return result

    def start(self) -> "PgCluster":
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync")
        self.resume()
        return self

    def resume(self) -> None:
        """Start the postmaster (again, after `halt`) on the same port and data."""
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
                   "-c fsync=off -c full_page_writes=off -c max_connections=500 -c log_min_messages=warning")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", str(int(START_TIMEOUT)), "start", timeout=START_TIMEOUT + 10)

    def halt(self) -> None:
        """Stop the server but keep its data: a database outage, ended by `resume`."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=30)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # --- databases --------------------------------------------------------------------------
    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = name or f"t_{secrets.token_hex(6)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def wait_ready(self, timeout: float = 10) -> None:
        import psycopg

        end = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres").close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)


@pytest.fixture(scope="session")
def pg_cluster():
    """The session's PostgreSQL server (started once, ~2 s)."""
    cluster = PgCluster().start()
    cluster.wait_ready()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster) -> str:
    """A fresh database for one test, as a postgresql+psycopg:// URL."""
    return pg_cluster.create_database()
