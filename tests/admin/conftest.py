"""Fixtures for the admin centre tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import adminkit  # noqa: E402


@pytest.fixture
def admin_node(node_factory):
    return adminkit.start_admin_node(node_factory)


@pytest.fixture
def api(admin_node):
    with adminkit.api_client(admin_node) as client:
        yield client
