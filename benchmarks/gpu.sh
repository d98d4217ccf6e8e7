#!/usr/bin/env bash
# The GPU tables of docs/performance.md, for anyone with an NVIDIA GPU.
# `bash benchmarks/gpu.sh --help` says how to run it.
set -uo pipefail

STAGES=(similarity pallas-tiles evaluate evaluate-pallas train train-bf16 profile)

usage() {
    cat <<'EOF'
Usage: bash benchmarks/gpu.sh --out DIR [OPTIONS] [STAGE ...]

Times scan-keras on an NVIDIA GPU with the JAX backend and writes what each
stage prints into DIR: DIR/STAGE.txt (its table, printed last) and
DIR/STAGE.log (warnings and errors), with DIR/versions.txt (the GPU, the
driver, JAX, Keras and scan-keras). Without a STAGE, every stage runs, in
the order below. The data are random, of the paper's shapes: nothing is
downloaded. docs/performance.md explains each table.

Stages:
  similarity       the 1K and 5K similarity matrices, t2i and i2t:
                   the layer in float32 and with bf16 products, the fused
                   Pallas kernel in both, against the floor (the one matrix
                   product every method pays)
  pallas-tiles     the fused kernel with ten tile shapes, at the first size
  evaluate         whole 1K and 5K evaluations (encode, score, rank)
  evaluate-pallas  the same with the fused kernel
  train            fit steps per second, presets f30k_t2i_avg and
                   f30k_i2t_avg, with 0, 4 and 8 reader threads; writes
                   8.6 GB of features of Flickr30K's shape to --tmp-dir
  train-bf16       the same under Keras' mixed_bfloat16 policy
  profile          a JAX profiler trace of the layer at the first size,
                   in DIR/trace (open it with TensorBoard or Perfetto)

Options:
  --out DIR        the folder for the tables (created if needed); required
  --sizes "A B"    sizes of the matrices and evaluations: 1k (1,000 images
                   x 5,000 captions), 5k (5,000 x 25,000) or tiny (a quick
                   try of the runbook itself); default "1k 5k"
  --tmp-dir DIR    where evaluate and train write their temporary features
                   (default: $TMPDIR, else /tmp); removed afterwards
  --python PATH    the Python interpreter to use (default: python3)
  --install        first install what the benchmarks need with pip:
                   the package from this checkout and JAX for CUDA 12
                   (pip install -e ".[jax]" "jax[cuda12]")
  --cpu            run without a GPU (for --sizes tiny only: the figures of
                   a CPU are on docs/performance.md already)
  -h, --help       show this help and exit

Examples:
  bash benchmarks/gpu.sh --out gpu-results                 # every stage
  bash benchmarks/gpu.sh --out gpu-results evaluate train  # two stages

Each stage is meant to finish within about 10 minutes on one H100-class GPU.
A stage that fails is reported at the end; the others still run. The exit
status is 0 when every stage succeeded, 1 when one failed, 2 for a wrong
command line and 3 when the GPU or a Python package is missing.
EOF
}

fail() {  # fail STATUS MESSAGE...: the message on stderr, then exit
    local status=$1
    shift
    printf 'gpu.sh: error: %s\n' "$*" >&2
    exit "$status"
}

out=""
sizes="1k 5k"
tmp_dir=${TMPDIR:-/tmp}
python=python3
install=0
cpu=0
stages=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --out | --sizes | --tmp-dir | --python)
            [ $# -ge 2 ] && [ -n "$2" ] || fail 2 "$1 needs a value (see --help)"
            case "$1" in
                --out) out=$2 ;;
                --sizes) sizes=$2 ;;
                --tmp-dir) tmp_dir=$2 ;;
                --python) python=$2 ;;
            esac
            shift 2
            ;;
        --out=* ) out=${1#*=}; shift ;;
        --sizes=*) sizes=${1#*=}; shift ;;
        --tmp-dir=*) tmp_dir=${1#*=}; shift ;;
        --python=*) python=${1#*=}; shift ;;
        --install) install=1; shift ;;
        --cpu) cpu=1; shift ;;
        -*) fail 2 "unknown option: $1 (see --help)" ;;
        *)
            known=0
            for stage in "${STAGES[@]}"; do
                [ "$1" = "$stage" ] && known=1
            done
            [ $known = 1 ] || fail 2 "unknown stage: $1 (the stages: ${STAGES[*]})"
            stages+=("$1")
            shift
            ;;
    esac
done

[ -n "$out" ] || fail 2 "--out DIR is required: the folder the tables are written to (see --help)"
for size in $sizes; do
    case "$size" in
        1k | 5k | tiny) ;;
        *) fail 2 "unknown size: $size (the sizes: 1k 5k tiny)" ;;
    esac
done
[ -n "${sizes// /}" ] || fail 2 "--sizes names no size (the sizes: 1k 5k tiny)"
[ ${#stages[@]} -gt 0 ] || stages=("${STAGES[@]}")
first_size=${sizes%% *}

# Everything below runs from the repository root; DIR stays where the
# caller meant it.
mkdir -p "$out" || fail 2 "cannot create the folder $out"
out=$(cd "$out" && pwd)
mkdir -p "$tmp_dir" || fail 2 "cannot create the folder $tmp_dir"
tmp_dir=$(cd "$tmp_dir" && pwd)
cd "$(dirname "${BASH_SOURCE[0]}")/.." || fail 2 "cannot find the repository root"
command -v "$python" >/dev/null 2>&1 || fail 3 "no Python interpreter '$python' (--python to choose one)"

if [ $install = 1 ]; then
    echo "Installing the package and JAX for CUDA 12 with pip..."
    "$python" -m pip install -e ".[jax]" "jax[cuda12]" || fail 3 "pip install failed"
fi

# The checkout's package first, whether or not it is installed.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" KERAS_BACKEND=jax
for module in numpy jax keras scan_keras; do
    "$python" -c "import $module" >/dev/null 2>&1 && continue
    case "$module" in
        jax) hint='pip install "jax[cuda12]"' ;;
        keras | numpy | scan_keras) hint='pip install -e ".[jax]" from the repository root' ;;
    esac
    error=$("$python" -c "import $module" 2>&1 | tail -n 1)
    fail 3 "the Python package '$module' cannot be imported by $python ($error). Install it: $hint, or run again with --install"
done

if [ $cpu = 0 ]; then
    command -v nvidia-smi >/dev/null 2>&1 \
        || fail 3 "no NVIDIA GPU found: nvidia-smi is not on the PATH (install the NVIDIA driver; --cpu runs on the CPU, for --sizes tiny only)"
    nvidia-smi -L >/dev/null 2>&1 \
        || fail 3 "no NVIDIA GPU found: nvidia-smi -L failed ($(nvidia-smi -L 2>&1 | head -n 1))"
    "$python" - <<'EOF' || fail 3 "JAX sees no GPU: install JAX with CUDA (pip install \"jax[cuda12]\", or run again with --install)"
import sys

import jax

devices = jax.devices()
if not any(device.platform == "gpu" for device in devices):
    print(f"JAX's devices: {devices}", file=sys.stderr)
    sys.exit(1)
EOF
fi

{
    "$python" -c "import jax, keras, scan_keras; print('jax', jax.__version__, 'keras', keras.__version__, 'scan-keras', scan_keras.__version__); print(jax.devices())"
    if [ $cpu = 0 ]; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    fi
} 2>&1 | tee "$out/versions.txt"

# The train stages write Flickr30K-sized features unless --sizes is tiny.
train_size=()
if [ "$sizes" = tiny ]; then
    train_size=(--images 40 --regions 4 --img-dim 16 --embed-size 8 --batch-size 16
                --steps 4 --warmup 4)
fi

run_stage() {
    case "$1" in
        similarity)
            "$python" benchmarks/similarity.py --sizes $sizes --repeats 10 \
                --methods scan scan-bf16 pallas pallas-bf16
            ;;
        pallas-tiles)
            # Images x words a tile, w: Triton warps, s: stages (the
            # default is 4x64w8s2). benchmarks/kernel_resources.py shows
            # what each needs; 8x64 t2i needs more shared memory than an
            # H100 gives a program, and is reported as failed there.
            "$python" benchmarks/similarity.py --sizes "$first_size" --repeats 5 \
                --literal-max-pairs 0 --methods pallas \
                --pallas-tiles 4x32w4 4x32w8 4x64w4 4x64w16 4x64w8s3 8x64w8 \
                4x32w8:bf16 4x64w8:bf16 4x128w8:bf16 4x128w16:bf16
            ;;
        evaluate | evaluate-pallas)
            local kernel=portable
            [ "$1" = evaluate-pallas ] && kernel=pallas
            # The 5K split's features (1.5 GB) are written to --tmp-dir first.
            "$python" benchmarks/similarity.py --sizes $sizes --evaluate-only \
                --repeats 3 --tmp-dir "$tmp_dir" --kernel $kernel
            ;;
        train)
            "$python" benchmarks/train_speed.py --preset f30k_t2i_avg f30k_i2t_avg \
                --workers 0 4 8 --tmp-dir "$tmp_dir" "${train_size[@]}"
            ;;
        train-bf16)
            "$python" benchmarks/train_speed.py --preset f30k_t2i_avg f30k_i2t_avg \
                --dtype mixed_bfloat16 --workers 4 8 --tmp-dir "$tmp_dir" "${train_size[@]}"
            ;;
        profile)
            "$python" - "$out/trace" "$first_size" <<'EOF'
import runpy
import sys

import jax

trace, size = sys.argv[1:]
# The layer alone: the literal version would fill the trace.
sys.argv = ["similarity.py", "--sizes", size, "--repeats", "3", "--literal-max-pairs", "0"]
with jax.profiler.trace(trace):
    runpy.run_path("benchmarks/similarity.py", run_name="__main__")
print(f"The trace is in {trace}")
EOF
            ;;
    esac
}

failed=()
for stage in "${stages[@]}"; do
    echo
    echo "== $stage: $out/$stage.txt =="
    if [[ $stage == train* ]] && [ "$sizes" != tiny ]; then
        free_kb=$(df -Pk "$tmp_dir" | awk 'NR == 2 {print $4}')
        if [ "${free_kb:-0}" -lt $((9 * 1024 * 1024)) ]; then
            echo "gpu.sh: $stage needs about 8.6 GB free in $tmp_dir (--tmp-dir); $((free_kb / 1024 / 1024)) GB are free. Skipped." \
                | tee "$out/$stage.log" >&2
            failed+=("$stage")
            continue
        fi
    fi
    started=$SECONDS
    run_stage "$stage" > >(tee "$out/$stage.txt") 2> >(tee "$out/$stage.log" >&2)
    status=$?
    wait  # for the two tee processes to write everything
    if [ $status = 0 ]; then
        echo "== $stage: done in $((SECONDS - started)) s =="
    else
        echo "== $stage: failed (exit status $status), see $out/$stage.log ==" >&2
        failed+=("$stage")
    fi
done

echo
if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu.sh: failed: ${failed[*]}; the tables of the others are in $out" >&2
    exit 1
fi
echo "The tables are in $out"
