"""Rewrite the README's settings reference from the schema in src/mxgate/config/node.py."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mxgate.config.node import settings_reference  # noqa: E402

START, END = "<!-- settings-reference:start -->", "<!-- settings-reference:end -->"


def render(readme: str) -> str:
    block = f"{START}\n{settings_reference()}{END}"
    return re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _m: block, readme, flags=re.DOTALL)


if __name__ == "__main__":
    path = ROOT / "README.md"
    path.write_text(render(path.read_text(encoding="utf-8")), encoding="utf-8")
