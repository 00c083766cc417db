"""Issue 17: dependency lower bounds exclude versions with known advisories, and constraints.txt
(used by scripts/test.sh) pins the installed closure for reproducible installs."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
# Package → first version without a published advisory (the CVE/GHSA ids are in pyproject.toml).
ADVISORY_FLOORS = {
    "python-multipart": "0.0.31",
    "starlette": "1.0.1",
    "cryptography": "50.0.0",
    "dnspython": "2.6.1",
    "jinja2": "3.1.6",
    "h11": "0.16",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return {_norm(Requirement(r).name): Requirement(r) for r in reqs}


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, ver = line.partition("==")
            assert ver, f"constraints.txt: {line!r} is not an exact pin"
            pins[_norm(name)] = ver
    return pins


def test_lower_bounds_exclude_versions_with_advisories():
    reqs = _requirements()
    for name, floor in ADVISORY_FLOORS.items():
        assert name in reqs, f"{name} must be a direct dependency with a lower bound"
        lows = [Version(s.version) for s in reqs[name].specifier if s.operator in (">=", ">")]
        assert lows and max(lows) >= Version(floor), f"{name}: lower bound {lows} admits versions before {floor}"


def test_constraints_pin_the_installed_closure_within_the_bounds():
    pins = _constraints()
    for name, req in _requirements().items():
        if name == "mxgate":
            continue
        assert name in pins, f"constraints.txt has no pin for {name}"
        assert Version(pins[name]) in req.specifier, f"{name}=={pins[name]} violates {req}"
    for name in ADVISORY_FLOORS:
        assert version(name) == pins[name], f"installed {name} {version(name)} is not the pinned {pins[name]}"


def test_the_test_command_installs_with_the_constraints():
    script = (REPO / "scripts" / "test.sh").read_text()
    assert re.search(r"pip install .*-c constraints\.txt .*-e '\.\[test\]'", script)
