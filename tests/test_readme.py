"""The README's settings reference is generated from the schema and must not go stale."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_settings_reference_is_current():
    spec = importlib.util.spec_from_file_location("settings_reference", ROOT / "scripts" / "settings_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert module.render(readme) == readme, "run: python3 scripts/settings_reference.py"


def test_quick_start_has_exactly_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("To run a node of your own", 1)[0]
    blocks = [b for i, b in enumerate(quick.split("```")) if i % 2 == 1]
    commands = [line for b in blocks for line in b.splitlines() if line.strip() and not line.startswith("sh")]
    assert commands == ["python3 -m pip install . && mxgate demo --keep-running", "bash scripts/test.sh"]
