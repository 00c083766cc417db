from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mxgate import cli


@pytest.fixture(scope="session")
def cli_app():
    cli._register_all()
    return cli.app


@pytest.fixture
def run(cli_app, tmp_path):
    """run(*args) -> Result, against a fresh (empty) home directory for this test."""
    runner = CliRunner()
    home = tmp_path / "home"
    # A node's home exists; commands that only read refuse a missing one (tests/cli/test_missing_home.py).
    home.mkdir()

    def invoke(*args: str):
        return runner.invoke(cli_app, ["--home", str(home), *args], catch_exceptions=False)

    invoke.home = home
    return invoke
