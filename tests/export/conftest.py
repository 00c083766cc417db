"""Fixtures for tests/export live in exportkit.py (a unique module name: several test folders share one
sys.path, and a second module named `conftest` would shadow the first)."""

from exportkit import *  # noqa: F401,F403
