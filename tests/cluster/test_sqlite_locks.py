"""The embedded store shared by several processes (a node's workers, the CLI): opening one more
engine in a process must not drop the SQLite locks its live connections hold (fcntl(2): closing
any descriptor of a file releases all of the process's locks on it). Without them, another
process's clean close takes itself for the database's last user, checkpoints and resets the WAL,
and this process's pooled connection goes on reading the old rows (seen as a stopped worker's
heartbeat that never changed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from mxgate.store.db import open_engine

WRITER = """
import sys
from sqlalchemy import text
from mxgate.store.db import open_engine
engine = open_engine(sys.argv[1])
with engine.begin() as conn:
    conn.execute(text("DELETE FROM probe_rows"))
    conn.execute(text("INSERT INTO probe_rows VALUES (:tag)"), {"tag": sys.argv[2]})
print("written", flush=True)
sys.stdin.readline()  # until the test says stop
engine.dispose()  # a clean close, as a stopping node makes
"""


def _writer(url: str, tag: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", WRITER, url, tag], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")})
    assert p.stdout.readline().strip() == "written"
    return p


def _stop(p: subprocess.Popen) -> None:
    p.stdin.write("stop\n")
    p.stdin.close()
    assert p.wait(30) == 0


def test_a_second_engine_keeps_the_first_ones_view_of_other_processes_writes(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    mine = open_engine(url)
    with mine.begin() as conn:
        conn.execute(text("CREATE TABLE probe_rows (tag TEXT)"))
    a = _writer(url, "A")
    with mine.connect() as conn:  # a pooled connection, open from now on
        assert conn.execute(text("SELECT tag FROM probe_rows")).scalar() == "A"
    open_engine(url).dispose()  # e.g. a second engine in the same process
    _stop(a)
    b = _writer(url, "B")
    try:
        with mine.connect() as conn:
            assert conn.execute(text("SELECT tag FROM probe_rows")).scalar() == "B"
    finally:
        _stop(b)
        mine.dispose()
