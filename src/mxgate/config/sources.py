"""Where node settings come from — a node.toml and MXGATE_<SECTION>__<FIELD> environment values —
readable without the settings schema (config/node.py builds pydantic models: ~80 ms to import).

Owns: the environment naming rule. A command that only needs to know whether anything overrides
the defaults (the CLI's store URL) asks here and loads the schema only when something does.
"""

from __future__ import annotations

import os
from typing import Mapping


def environment_settings(environ: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(section, field, raw value) of each MXGATE_<SECTION>__<FIELD> variable, lower-cased names."""
    found = []
    for key, value in (os.environ if environ is None else environ).items():
        if key.startswith("MXGATE_") and "__" in key:
            section, _, field = key[len("MXGATE_"):].lower().partition("__")
            found.append((section, field, value))
    return found
