#!/usr/bin/env bash
# The test command: sets up .venv on first use (scripts/setup.sh), then runs
# the whole suite once per Keras backend.
#   bash scripts/test.sh                   # all three backends
#   KERAS_BACKEND=jax bash scripts/test.sh # one backend
#   bash scripts/test.sh -k attention      # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv=${SCAN_KERAS_VENV:-.venv}

status=0
for backend in ${KERAS_BACKEND:-tensorflow jax torch}; do
    echo "=== KERAS_BACKEND=$backend"
    rc=0
    KERAS_BACKEND=$backend TF_CPP_MIN_LOG_LEVEL=2 \
        "$venv/bin/python" -m pytest "$@" || rc=$?
    # Exit code 5 means "no tests collected" (e.g. a -k that matches none).
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then
        status=$rc
    fi
done
exit "$status"
