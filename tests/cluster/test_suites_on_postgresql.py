"""Issue 10, must-show 1 (part two): the existing store, policy and trace suites, rerun on PostgreSQL.

The modules below are loaded from their own directories and their tests collected here again
under a `pg__<module>__` prefix, with an autouse fixture that points MXGATE_STORE_URL at a fresh
PostgreSQL database for each test: every home's `database_url`, every in-process node, every
CLI subprocess and CliRunner call then uses PostgreSQL. Their SQLite runs stay where they are.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
SUITES = [
    "quarantine/test_store.py",  # QuarantineStore: add, preview, release into Maildir, trace event
    "quarantine/test_quarantine_cli.py",  # a running node quarantines, the CLI releases (other process)
    "cli/test_policy_validation.py",  # the policy CLI: validation, round trips, versions (CliRunner)
    "server/test_live_policy.py",  # a CLI change enforced within 1 s; the trace CLI; status
]
FIXTURE_MODULES = ["cli/conftest.py"]  # fixtures those suites take from their own directory


def _load(rel: str):
    path = TESTS / rel
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.append(folder)  # their helper imports (rig, efkit ...) resolve as at home
    name = "pg_" + rel.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _is_fixture(obj) -> bool:
    return hasattr(obj, "_fixture_function_marker") or type(obj).__name__ == "FixtureFunctionDefinition"


for _rel in FIXTURE_MODULES + SUITES:
    _mod = _load(_rel)
    _stem = Path(_rel).stem
    for _name, _obj in vars(_mod).items():
        if _name.startswith("test_") and callable(_obj):
            globals()[f"test_pg__{_stem}__{_name[5:]}"] = _obj
        elif _is_fixture(_obj) and not _name.startswith("_"):
            globals()[_name] = _obj


@pytest.fixture(autouse=True)
def _on_postgresql(pg_cluster, monkeypatch):
    monkeypatch.setenv("MXGATE_STORE_URL", pg_cluster.create_database())
