#!/usr/bin/env bash
# The GPU numbers of docs/performance.md, one stage per call (each within
# about 10 minutes). From the repository root; on a machine with JAX but no
# Keras, put the Keras wheels (keras, and what it needs) in .whl/ first:
#
#     bash benchmarks/gpu.sh similarity   # 1K and 5K matrices, t2i and i2t
#     bash benchmarks/gpu.sh pallas-tiles # the fused kernel's tiles, 1K
#     bash benchmarks/gpu.sh evaluate     # whole 1K and 5K evaluations
#     bash benchmarks/gpu.sh evaluate-pallas  # the same, implementation="pallas"
#     bash benchmarks/gpu.sh train        # fit steps/s, both Flickr30K presets
#     bash benchmarks/gpu.sh train-bf16   # the same under mixed_bfloat16
#     bash benchmarks/gpu.sh profile      # a JAX trace of the 1K matrix
#
# Each stage prints its table and copies it (and the trace) to $OUT.
# SIZES overrides the sizes (e.g. SIZES=tiny to try the script on a CPU),
# PYTHON the interpreter.
set -euo pipefail
stage=${1:?"usage: bash benchmarks/gpu.sh similarity|pallas-tiles|evaluate|evaluate-pallas|train|train-bf16|profile"}
out=${OUT:-/tmp/scan-keras-gpu}
sizes=${SIZES:-1k 5k}
python=${PYTHON:-python3}
mkdir -p "$out"

if ! "$python" -c "import keras" 2>/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} KERAS_BACKEND=jax

"$python" -c "import jax, keras; print('jax', jax.__version__, 'keras', keras.__version__, jax.devices())" \
    | tee "$out/versions.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    | tee -a "$out/versions.txt" || true

case "$stage" in
    similarity)
        "$python" benchmarks/similarity.py --sizes $sizes --repeats 10 \
            --methods scan scan-bf16 pallas pallas-bf16 | tee "$out/similarity.txt"
        ;;
    pallas-tiles)
        # Images x words a tile, w: Triton warps, s: stages (the layer's
        # `pallas` is 4x64w8s2). benchmarks/kernel_resources.py shows what
        # each needs: 8x64 t2i needs more shared memory than an H100 has.
        "$python" benchmarks/similarity.py --sizes ${sizes%% *} --repeats 5 \
            --literal-max-pairs 0 --methods pallas \
            --pallas-tiles 4x32w4 4x32w8 4x64w4 4x64w16 4x64w8s3 8x64w8 \
            4x32w8:bf16 4x64w8:bf16 4x128w8:bf16 4x128w16:bf16 \
            | tee "$out/pallas-tiles.txt"
        ;;
    evaluate | evaluate-pallas)
        kernel=portable
        [ "$stage" = evaluate-pallas ] && kernel=pallas
        # The 5K split's features (1.5 GB) are written to /tmp first.
        "$python" benchmarks/similarity.py --sizes $sizes --evaluate-only \
            --repeats 3 --tmp-dir /tmp --kernel $kernel | tee "$out/$stage.txt"
        ;;
    train)
        # Writes 8.6 GB of random features of Flickr30K's shape to /tmp.
        "$python" benchmarks/train_speed.py --preset f30k_t2i_avg f30k_i2t_avg \
            --workers 0 4 8 --tmp-dir /tmp | tee "$out/train.txt"
        ;;
    train-bf16)
        "$python" benchmarks/train_speed.py --preset f30k_t2i_avg f30k_i2t_avg \
            --dtype mixed_bfloat16 --workers 4 8 --tmp-dir /tmp | tee "$out/train-bf16.txt"
        ;;
    profile)
        "$python" - "$out/trace" ${sizes%% *} <<'EOF'
import runpy
import sys

import jax

trace, size = sys.argv[1:]
# The layer alone: the literal version would fill the trace.
sys.argv = ["similarity.py", "--sizes", size, "--repeats", "3", "--literal-max-pairs", "0"]
with jax.profiler.trace(trace):
    runpy.run_path("benchmarks/similarity.py", run_name="__main__")
EOF
        ;;
    *)
        echo "unknown stage: $stage" >&2
        exit 2
        ;;
esac
