"""Fixtures for tests/probe live in probekit.py (a unique module name: several test folders share one
sys.path, and a second module named `conftest` would shadow the first)."""

from probekit import *  # noqa: F401,F403
