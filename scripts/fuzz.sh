#!/usr/bin/env bash
# Longer fuzzing outside CI (bounded by FUZZ_EXAMPLES): SMTP session, address, Received and policy parsers.
set -euo pipefail
cd "$(dirname "$0")/.."
export FUZZ_EXAMPLES="${FUZZ_EXAMPLES:-2000}"
exec python3 -m pytest -q -p no:cacheprovider tests/adversarial/test_fuzz_session.py tests/policy tests/auth/test_received.py \
  --hypothesis-seed="${FUZZ_SEED:-0}" -o "addopts=" "$@"
