"""Helpers for the Exchange Online audit/import tests: the fixtures, mutated copies, the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import rig

FIXTURES = Path(__file__).parent / "fixtures"
GUIDE = FIXTURES / "guide"
REALWORLD = FIXTURES / "realworld"


def guide_files() -> list[Path]:
    return sorted(GUIDE.glob("*.json"))


def load(name: str, base: Path = GUIDE):
    text = (base / name).read_bytes()
    return json.loads(text.decode("utf-16") if text.startswith(b"\xff\xfe") else text.decode("utf-8-sig")) if text else None


def tenant_dir(tmp: Path, **replace) -> Path:
    """A copy of the guide tenant in tmp with some files replaced: replace[file stem] = JSON value
    (None = an empty file, as PowerShell writes when the cmdlet returned nothing)."""
    tmp.mkdir(parents=True, exist_ok=True)
    for f in guide_files():
        stem = f.stem.replace("-", "_")
        if stem in replace:
            value = replace[stem]
            (tmp / f.name).write_text("" if value is None else json.dumps(value, indent=4))
        else:
            (tmp / f.name).write_bytes(f.read_bytes())
    for stem, value in replace.items():
        path = tmp / (stem.replace("_", "-") + ".json")
        if not path.exists():
            path.write_text("" if value is None else json.dumps(value, indent=4))
    return tmp


def mxgate(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "PYTHONPATH": str(rig.REPO / "src"), **(env or {})}
    e.pop("MXGATE_HOME", None)
    return subprocess.run([sys.executable, "-m", "mxgate", *args], capture_output=True, text=True, timeout=120,
                          env=e, cwd=cwd)


def ps_params(script: str, noun: str, name: str) -> dict:
    """The `$params = @{...}` block the EXO export writes before New-/Set-<noun> for `name`,
    parsed back into Python values ('x' → str, $true → bool, @('a', 'b') → list)."""
    block = re.search(r"# --- " + re.escape(noun) + r" connector '" + re.escape(name) + r"' -+\n(?:#.*\n)*\$params = @\{\n(.*?)\n\}",
                      script, re.S)
    assert block, f"no {noun} connector {name!r} in the script"
    out = {}
    for line in block.group(1).splitlines():
        key, _, value = line.strip().partition(" = ")
        out[key] = _ps_value(value)
    return out


def _ps_value(text: str):
    if text in ("$true", "$false"):
        return text == "$true"
    if text.startswith("@("):
        return [_ps_value(v.strip()) for v in text[2:-1].split(",") if v.strip()]
    if text.startswith("'"):
        return text[1:-1].replace("''", "'")
    raise AssertionError(f"unexpected PowerShell value {text!r}")


class _Result:
    def __init__(self, r):
        self.returncode, self.stdout, self.stderr = r.exit_code, r.stdout, r.stderr


def cli(*args: str) -> _Result:
    """In process (CliRunner): the same command line, without a Python start per call."""
    from typer.testing import CliRunner

    from mxgate import cli as cli_module

    if not any(g.name == "exo" for g in cli_module.app.registered_groups):
        cli_module._register_all()
    return _Result(CliRunner().invoke(cli_module.app, list(args), catch_exceptions=False))
