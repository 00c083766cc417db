"""Fixtures for several nodes on one store (issue 10): the loopback PostgreSQL cluster from
tests/pg_rig.py, `store_url` running a test once on SQLite and once on PostgreSQL, and helpers
for the tests (engines disposed afterwards). Helpers shared by the tests are in clusterkit.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from pg_rig import pg_cluster, pg_url  # noqa: F401  (fixtures used by this directory's tests)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path: Path, monkeypatch) -> str:
    """The test's store, one run per backend; MXGATE_STORE_URL points the CLI and homes at it."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("pg_cluster").create_database()
    monkeypatch.setenv("MXGATE_STORE_URL", url)
    return url


@pytest.fixture
def engine_for():
    """open_engine(url) whose engines are disposed after the test (PostgreSQL connections are finite)."""
    from mxgate.store.db import open_engine

    opened = []

    def make(url: str):
        e = open_engine(url)
        opened.append(e)
        return e

    yield make
    for e in opened:
        e.dispose()
