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


# Fast retries so the multi-gateway tests finish in seconds; each is a [gateway] setting.
FAST_GATEWAY = {"retry_first": 0.3, "retry_max_backoff": 1.0, "host_backoff": 0.2, "queue_scan_interval": 0.1,
                "relay_connect_timeout": 3.0, "relay_timeout": 10.0}


def gateway_toml(*, name: str, store_url: str, listen: str, downstream: str, downstream_ca: str, dns: str,
                 source: str, **gateway: object) -> str:
    """node.toml for a gateway-only node on the shared store with the database queue."""
    settings = {**FAST_GATEWAY, "queue": "database", "hostname": f"{name}.contoso.test", **gateway}
    lines = [f"{k} = {_toml_value(v)}" for k, v in settings.items()]
    return "\n".join([
        "[node]", f'name = "{name}"',
        "[roles]", "mailbox = false", "gateway = true", "admin = false",
        "[store]", f'url = "{store_url}"',
        "[gateway]", f'listen = ["{listen}"]', f'downstream = ["{downstream}"]', f'downstream_ca = "{downstream_ca}"',
        f'source_address = "{source}"', *lines,
        "[dns]", f'servers = ["{dns}"]', "timeout = 1.0", ""])


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def queue_rows(engine) -> list[dict]:
    """The shared gateway queue as plain dicts (no bodies)."""
    from sqlalchemy import select

    from mxgate.queue.dbspool import gateway_queue

    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(*[c for c in gateway_queue.c if c.name != "body"]))]
