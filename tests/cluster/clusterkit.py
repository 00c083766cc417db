"""Helpers for the multi-node tests: the CLI as a subprocess, gateway node configs, queue rows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def mxgate(*args: str, home: Path | None = None, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """`python -m mxgate ...` in its own process, inheriting MXGATE_STORE_URL unless env overrides."""
    full = dict(os.environ, **(env or {}))
    if home is not None:
        full["MXGATE_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "mxgate", *args], capture_output=True, text=True, env=full,
                          timeout=timeout)
