"""Fixtures for tests/gateway live in gwkit.py (a unique module name: several test folders share one
sys.path, and a second module named `conftest` would shadow the first)."""

from gwkit import *  # noqa: F401,F403
