"""Fixtures shared by the queue tests."""

from __future__ import annotations

import pytest

from mxgate.durable import GroupCommitter


@pytest.fixture
async def committer():
    """A running group committer, as a node's spool gets one, closed after the test."""
    c = GroupCommitter(max_batch=64)
    c.start()
    yield c
    await c.aclose()
