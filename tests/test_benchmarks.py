"""The benchmark's literal implementation, and the script run end to end."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

import reference
from helpers import load_benchmark_script

# Training runs, subprocesses or the site build: left out of the fast suite
# (`pytest -m "not slow"`).
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "similarity.py")


def load_benchmark():
    return load_benchmark_script("similarity")


@pytest.mark.parametrize("cross_attn", ["t2i", "i2t"])
def test_literal_version_is_the_papers_equations(rng, cross_attn):
    bench = load_benchmark()
    images = bench.random_embeddings(rng, 3, 7, 16, rank=4)
    captions = bench.random_embeddings(rng, 4, 5, 16, rank=4)
    lengths = (np.full(3, 7), np.full(4, 5))
    expected = reference.similarity_matrix(
        images, captions, *lengths, cross_attn=cross_attn, lambda_softmax=9.0,
        agg_func="mean", lambda_lse=6.0, raw_norm="clipped_l2norm", eps=1e-8,
    )
    in_numpy = bench.literal_similarity(np, images.astype(np.float64),
                                        captions.astype(np.float64), cross_attn, 9.0)
    np.testing.assert_allclose(in_numpy, expected, rtol=1e-12)
    in_keras = bench.literal_similarity(ops, ops.convert_to_tensor(images),
                                        ops.convert_to_tensor(captions), cross_attn, 9.0)
    np.testing.assert_allclose(ops.convert_to_numpy(in_keras), expected, rtol=1e-5)


@pytest.mark.once  # the script's plumbing; its subject is tested per backend
def test_script_prints_the_table():
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    result = subprocess.run(
        [sys.executable, SCRIPT, "--sizes", "tiny", "--dim", "32", "--repeats", "1"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    table = result.stdout[result.stdout.index("| size |"):].splitlines()
    rows = [line.split("|")[1:-1] for line in table[2:]]
    methods = [(row[2].strip(), row[3].strip()) for row in rows]
    assert methods == [
        (attn, method)
        for attn in ("t2i", "i2t")
        for method in ("floor", "literal", "scan", "scan-bf16")
    ]
    errors = {(row[2].strip(), row[3].strip()): row[7].strip() for row in rows}
    for attn in ("t2i", "i2t"):
        # float32 methods agree with float64 closely; bf16 within its bound.
        assert float(errors[attn, "scan"]) < 1e-5
        assert float(errors[attn, "literal"]) < 1e-5
        assert float(errors[attn, "scan-bf16"]) <= 3e-3


@pytest.mark.once  # the script's plumbing; its subject is tested per backend
def test_training_script_prints_the_table():
    # The mixed policy: float32 is the same code without the dtype override.
    dtype = "mixed_bfloat16"
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "train_speed.py"),
         "--preset", "f30k_t2i_avg", "f30k_i2t_avg", "--images", "40", "--regions", "4",
         "--img-dim", "16", "--embed-size", "8", "--batch-size", "16",
         "--steps", "4", "--warmup", "4", "--workers", "0", "2", "--dtype", dtype],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"dtype {dtype}," in result.stdout
    table = result.stdout[result.stdout.index("preset "):].splitlines()[1:]
    rows = [line.split() for line in table if not line.startswith("reader/N")]
    labels = ["in-memory", "on-device", "precomp/0", "precomp/2", "reader/0", "reader/2"]
    assert [row[:2] for row in rows] == [
        [preset, label] for preset in ("f30k_t2i_avg", "f30k_i2t_avg") for label in labels
    ]
    for _, _, rate, ms in rows:
        # Steps (or batches) per second and milliseconds each: one figure,
        # each rounded as printed.
        assert float(rate) > 0
        assert float(rate) * float(ms) == pytest.approx(
            1000, abs=0.05 * float(ms) + 5e-4 * float(rate) + 1e-6)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the GPU runbook is JAX's")
@pytest.mark.parametrize(
    # evaluate-pallas is evaluate with another --kernel, whose evaluation
    # tests/test_pallas_attention.py checks.
    "stage", ["similarity", "pallas-tiles", "evaluate", "profile"]
)
def test_gpu_runbook_runs_a_stage(tmp_path, stage):
    # The runbook's stages at the tiny size, on the CPU (`--cpu`).
    result = subprocess.run(
        ["bash", os.path.join(ROOT, "benchmarks", "gpu.sh"), "--out", str(tmp_path),
         "--sizes", "tiny", "--cpu", "--python", sys.executable, stage],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "keras 3." in (tmp_path / "versions.txt").read_text()
    if stage == "similarity":
        table = (tmp_path / "similarity.txt").read_text()
        for method in ("scan-bf16", "pallas", "pallas-bf16"):
            assert f"| tiny | 20x100 | i2t | {method} |" in table
    elif stage == "pallas-tiles":
        table = (tmp_path / "pallas-tiles.txt").read_text()
        for method in ("pallas", "pallas 4x32w4", "pallas 8x64w8", "pallas 4x128w8:bf16"):
            assert f"| tiny | 20x100 | t2i | {method} |" in table
        assert "failed" not in table
    elif stage == "evaluate":
        table = (tmp_path / "evaluate.txt").read_text()
        for attn in ("t2i", "i2t"):
            assert f"| tiny | 20x100 | {attn} | evaluate |" in table
        assert "| scan |" not in table
    else:
        # A trace of the layer's calls, and no literal version in it.
        assert list((tmp_path / "trace").rglob("*.xplane.pb"))
        assert "| tiny | 20x100 | t2i | scan |" in result.stdout
        assert "literal" not in result.stdout


def test_floor_too_large_for_memory_is_timed_on_a_slice(rng, monkeypatch):
    # The 5K floor's output (216 GB) fits no GPU: a slice of the captions
    # is multiplied instead, and its time scaled by the missing share.
    bench = load_benchmark()
    monkeypatch.setattr(bench, "FLOOR_MAX_ELEMENTS", 3 * 7 * 5 * 4)
    floor, scale = bench.floor_fn(n_images=3, n_regions=7, n_captions=10, n_words=5)
    assert scale == 2.5
    images = rng.normal(size=(3, 7, 16)).astype("float32")
    captions = rng.normal(size=(10, 5, 16)).astype("float32")
    got = ops.convert_to_numpy(floor(ops.convert_to_tensor(images),
                                     ops.convert_to_tensor(captions)))
    expected = images.reshape(21, 16).astype(np.float64) @ captions[:4].reshape(20, 16).T
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="Pallas is JAX's")
def test_kernel_resources_script_lowers_every_tile():
    # The Triton IR alone here; compiling it needs the `triton` package.
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "kernel_resources.py"),
         "--ir-only", "--tiles", "4x32w4", "8x64w8", "--images", "40",
         "--captions", "64"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines()[2:]]
    assert [(r[0].strip(), r[1].strip(), r[2].strip()) for r in rows] == [
        (tiles, dtype, attn)
        for tiles in ("4x32w4", "8x64w8")
        for dtype in ("float32", "bfloat16")
        for attn in ("t2i", "i2t")
    ]
    assert all(int(r[3]) > 100 for r in rows)  # lines of Triton IR


@pytest.mark.once  # the script's plumbing; its subject is tested per backend
def test_tf32_script_prints_the_table():
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "tf32_error.py"),
         "--images", "3", "--captions", "5", "--dim", "64"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    table = result.stdout[result.stdout.index("| attn |"):].splitlines()[2:]
    errors = {tuple(c.strip() for c in line.split("|")[1:3]): float(line.split("|")[3])
              for line in table}
    for attn in ("t2i", "i2t"):
        # Exact products: only float64 rounding; rounded TF32 operands: far
        # below truncated ones when the Gram products stay float32.
        assert errors[attn, "float32 (no TF32)"] < 1e-12
        assert 1e-6 < errors[attn, "TF32 nearest, Gram float32"] < 1e-4
        assert (errors[attn, "TF32 truncated, Gram float32"]
                > 3 * errors[attn, "TF32 nearest, Gram float32"])


def test_tf32_emulation_rounds_to_ten_mantissa_bits():
    module = load_benchmark_script("tf32_error")
    x = np.float32([1 + 2**-11 + 2**-20, 1 + 2**-11 - 2**-20, -(1 + 3 * 2**-11)])
    np.testing.assert_array_equal(module.tf32(x, "nearest"), [1 + 2**-10, 1, -(1 + 2**-9)])
    np.testing.assert_array_equal(module.tf32(x, "truncate"), [1, 1, -(1 + 2**-10)])


@pytest.mark.once  # the script's plumbing; its subject is tested per backend
def test_eager_layer_script_prints_the_table(tmp_path):
    backend = keras.backend.backend()
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "eager_layer.py"), "--backends",
         backend, "--sizes", "5x7", "--repeats", "1", "--dim", "16",
         "--json", str(tmp_path / "rows.json")],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    rows = json.load(open(tmp_path / "rows.json"))
    methods = [row["method"] for row in rows]
    expected = ["floor", "layer", "layer, op by op"]
    extra = {"torch": ["layer, torch.compile"], "tensorflow": ["layer, jit_compile=True"]}
    assert methods == expected + extra.get(backend, [])
    compiled = {row["method"]: row["compilations"] for row in rows}
    # One compilation of the eager call where the backend compiles, none op by op.
    assert compiled["layer"] == (1 if backend in ("jax", "tensorflow") else 0)
    assert compiled["layer, op by op"] == 0
    assert "| layer, op by op |" in result.stdout


def test_the_documented_eager_table_is_the_stored_run():
    import json
    import re

    rows = json.load(open(os.path.join(ROOT, "benchmarks/results/eager_layer.json")))
    text = open(os.path.join(ROOT, "docs/performance.md"), encoding="utf-8").read()
    for r in rows:
        first = "" if r["first_s"] is None else f"{r['first_s']:.1f}"
        line = (f"| {r['backend']} | {r['size']} | {r['method']} | {r['ms']:.0f} | "
                f"{r['ratio']:.2f}x | {first} |")
        assert line in text, line
    by = {(r["backend"], r["size"], r["method"]): r for r in rows}
    prose = re.sub(r"\s+", " ", text)
    # "On JAX the compiled call is within 1.4x of the floor at both sizes."
    assert "within 1.4x of the floor at both sizes" in prose
    assert all(by["jax", size, "layer"]["ratio"] < 1.4 for size in ("100x250", "1000x500"))
    # TensorFlow: a third of the time saved; half a minute of compilation.
    small, large = "100x250", "1000x500"
    assert by["tensorflow", small, "layer"]["compilations"] == 1
    assert by["tensorflow", large, "layer"]["compilations"] == 0
    for size, method in ((small, "layer"), (large, "layer, jit_compile=True")):
        saved = 1 - by["tensorflow", size, method]["ms"] / by["tensorflow", size, "layer, op by op"]["ms"]
        assert 0.28 < saved < 0.4, (size, saved)
    assert 20 < by["tensorflow", large, "layer, jit_compile=True"]["first_s"] < 45
    assert by["torch", large, "layer"]["ratio"] < 1
