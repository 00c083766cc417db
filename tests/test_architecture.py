"""The layers hold: no import cycle between subpackages, the pure core imports no edge, and the
crossings style.md names stay removed. Runs the shared import-graph tool (../shared/tools beside
the clone, as in CI) and reads module-level imports itself for the named crossings."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "mxgate"


def _shared_tool() -> Path:
    """../shared/tools/import_graph.py beside the clone; for a git worktree, beside the main clone."""
    candidates = [ROOT.parent / "shared"]
    if os.environ.get("MXGATE_SHARED"):
        candidates.insert(0, Path(os.environ["MXGATE_SHARED"]))
    try:
        common = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--path-format=absolute", "--git-common-dir"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        if common:
            candidates.append(Path(common).parent.parent / "shared")
    except (OSError, subprocess.SubprocessError):
        pass
    for c in candidates:
        tool = c / "tools" / "import_graph.py"
        if tool.is_file():
            return tool
    pytest.fail("the import-graph tool is missing: expected shared/tools/import_graph.py beside the clone "
                f"(looked in {', '.join(str(c) for c in candidates)}; set MXGATE_SHARED to its folder)")


def test_no_cycles_and_no_core_to_edge_imports():
    tool = _shared_tool()
    run = subprocess.run([sys.executable, str(tool), str(PKG)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"import graph has cycles or core-to-edge imports:\n{run.stdout}{run.stderr}"
    assert "0 cycle(s), 0 core-to-edge import(s)" in run.stdout


def _module_imports(path: Path) -> set[str]:
    """Module-level imports of one file (TYPE_CHECKING blocks excluded), as dotted names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, (ast.If, ast.Try)):
            stack += node.body + node.orelse + getattr(node, "finalbody", [])
            for h in getattr(node, "handlers", []):
                stack += h.body
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _all_imports(path: Path) -> set[str]:
    """Every import in the file, lazy ones inside functions included."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


# style.md "Layers to aim for": crossings that once existed, each a lower layer reaching up.
FORBIDDEN = [
    ("server/mailbox.py", "mxgate.admin"),
    ("queue/relay.py", "mxgate.server"),
    ("queue/outbound.py", "mxgate.server"),
    ("auth/dkim_sign.py", "mxgate.delivery"),
    ("auth/pipeline.py", "mxgate.quarantine"),
    ("policy/validate.py", "mxgate.filters"),
]


@pytest.mark.parametrize("module, forbidden", FORBIDDEN)
def test_named_crossings_stay_removed(module, forbidden):
    hits = {i for i in _all_imports(PKG / module) if i == forbidden or i.startswith(forbidden + ".")}
    assert not hits, f"{module} imports {sorted(hits)} (even lazily)"


@pytest.mark.parametrize("leaf", ["verdict.py", "names.py", "durable.py", "metrics.py"])
def test_leaves_import_nothing_from_mxgate(leaf):
    assert not {i for i in _module_imports(PKG / leaf) if i.startswith("mxgate")}


def test_pure_core_does_no_io():
    """style.md: policy/, the Received walk and the verdict code import no asyncio, socket or os."""
    files = [*sorted((PKG / "policy").glob("*.py")), PKG / "auth" / "received.py", PKG / "auth" / "skiplist.py",
             PKG / "verdict.py", PKG / "names.py"]
    for f in files:
        bad = {i for i in _all_imports(f) if i.split(".")[0] in ("asyncio", "socket", "os")}
        assert not bad, f"{f.relative_to(PKG)} imports {sorted(bad)}"


def test_architecture_doc_names_functions_that_exist():
    """docs/architecture.md walks a message through functions by name: each must exist."""
    import re

    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    source = "\n".join(p.read_text(encoding="utf-8") for p in PKG.rglob("*.py"))
    defined = {a or b for a, b in re.findall(r"^\s*(?:async\s+)?def\s+(\w+)|^\s*class\s+(\w+)", source, re.M)}
    defined |= set(re.findall(r"^(\w+)\s*=", source, re.M))  # module-level names (e.g. a Protocol alias)
    cited = {c.rsplit(".", 1)[-1] for c in re.findall(r"`([A-Za-z_][\w.]*)`", doc)
             if not c.endswith(".py") and ("." in c or "_" in c or c[:1].isupper())}
    cited -= {c for c in cited if c.isupper()}  # enum members (ACCEPT, REJECT...)
    missing = sorted(cited - defined)
    assert not missing, f"docs/architecture.md names functions that do not exist: {missing}"
