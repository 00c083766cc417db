#!/usr/bin/env bash
# The whole test suite, from a fresh machine: system packages the tests use as real peers,
# the Python package with its test extras, then pytest. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
# The constraints file pins every package of the closure: the run is reproducible.
python3 -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
exec python3 -m pytest -q -p no:cacheprovider "$@"
