#!/usr/bin/env bash
# The whole test suite, from a fresh machine: system packages the tests use as real peers, a
# virtual environment with the package and its test extras (Debian's Python is "externally
# managed", PEP 668, so nothing is installed into it), then pytest. Arguments go to pytest.
# `.ci/run` runs exactly this. The venv is reused; it is reinstalled only when pyproject.toml or
# constraints.txt changes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
VENV=${MXGATE_VENV:-.venv}
stamp="$VENV/.mxgate-installed"
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # The constraints file pins every package of the closure: the run is reproducible.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
  echo "$want" > "$stamp"
fi
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
