#!/usr/bin/env bash
# The test command: sets up .venv on first use (scripts/setup.sh), then runs
# the whole suite once per Keras backend, and the tutorial notebooks under
# nbval once, on the JAX backend (their stored outputs come from it).
#   bash scripts/test.sh                   # all three backends + notebooks
#   KERAS_BACKEND=jax bash scripts/test.sh # one backend (+ notebooks if jax)
#   bash scripts/test.sh -k attention      # extra arguments go to pytest
#   SCAN_KERAS_NOTEBOOKS=0 bash scripts/test.sh   # skip the notebooks
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
bash scripts/setup.sh
venv=${SCAN_KERAS_VENV:-.venv}
backends=${KERAS_BACKEND:-tensorflow jax torch}

# Tests marked `once` (independent of the backend: file formats, the
# command line, scripts, the site) run in one backend's run, not in all
# three (tests/conftest.py).
read -r -a backend_list <<< "$backends"
if [ "${#backend_list[@]}" -gt 1 ] && [ -z "${SCAN_KERAS_ONCE_ON:-}" ]; then
    export SCAN_KERAS_ONCE_ON=jax
fi

# Two pytest workers by default (pytest-xdist; SCAN_KERAS_TEST_WORKERS=1 for
# one process). Each test file runs whole in one worker, so its module
# fixtures are made once.
workers=${SCAN_KERAS_TEST_WORKERS:-2}
parallel=()
if [ "$workers" -gt 1 ] && "$venv/bin/python" -c "import xdist" 2>/dev/null; then
    parallel=(-n "$workers" --dist loadfile)
fi

# The time of each part, printed at the end.
times=("setup $((SECONDS - started)) s")
part_started=$SECONDS

status=0
check() {
    # Exit code 5 means "no tests collected" (e.g. a -k that matches none).
    local rc=$1
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then
        status=$rc
    fi
}
for backend in $backends; do
    echo "=== KERAS_BACKEND=$backend"
    rc=0
    KERAS_BACKEND=$backend TF_CPP_MIN_LOG_LEVEL=2 \
        "$venv/bin/python" -m pytest ${parallel[@]+"${parallel[@]}"} "$@" || rc=$?
    check "$rc"
    times+=("$backend $((SECONDS - part_started)) s")
    part_started=$SECONDS
done
if [[ " $backends " == *" jax "* ]] && [ "${SCAN_KERAS_NOTEBOOKS:-1}" != 0 ]; then
    echo "=== notebooks (KERAS_BACKEND=jax)"
    rc=0
    KERAS_BACKEND=jax "$venv/bin/python" -m pytest --nbval --nbval-current-env \
        --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider \
        ${parallel[@]+"${parallel[@]}"} notebooks "$@" || rc=$?
    check "$rc"
    times+=("notebooks $((SECONDS - part_started)) s")
fi
echo "=== times: $(IFS=,; echo "${times[*]}" | sed 's/,/, /g'); in all $((SECONDS - started)) s"
exit "$status"
