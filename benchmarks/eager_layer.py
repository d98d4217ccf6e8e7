"""The attention layer called the way a user calls it: eagerly, on concrete
arrays, on each backend, beside the one-matrix-product floor.

For each backend of `--backends` (one subprocess each) and each size of
`--sizes` (images x captions; 36 regions, 12 words, d = 1024, the shapes of
`benchmarks/similarity.py`):

- `floor`: the one product of all regions with all words,
  `(I R, d) x (d, C W)`, called eagerly;
- `layer`: `StackedCrossAttention("t2i", lambda_softmax=9.0)(regions,
  words)` as the README calls it. On JAX and TensorFlow the call runs a
  compiled function of the layer's own (`layers/eager.py`); on PyTorch it
  runs as it is;
- `layer, op by op`: the same with `jit_compile=False`, every operation
  run eagerly (what the layer did before it compiled its eager calls);
- `layer, jit_compile=True` (TensorFlow): compiled whatever the number of
  tiles (`"auto"` leaves calls of many tiles op by op there: XLA unrolls
  them and its compile time grows with their number);
- `layer, torch.compile` (PyTorch): `torch_compile=True`.

Times are the median of `--repeats` calls after the first, interleaved
round by round with the floor's; the first call (compilation included) is
reported apart. The table is printed last, and written as JSON with
`--json`.

    python benchmarks/eager_layer.py                          # about 10 min on 2 cores
    python benchmarks/eager_layer.py --backends jax --sizes 20x50 --repeats 1   # a check
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REGIONS, WORDS, DIM = 36, 12, 1024


def _similarity_script():
    spec = importlib.util.spec_from_file_location("similarity", os.path.join(HERE, "similarity.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(size, repeats, dim):
    """`[row]` for one size on the running backend."""
    import keras
    from keras import ops

    from scan_keras.layers import StackedCrossAttention
    from scan_keras.layers.eager import traces

    bench = _similarity_script()
    n_images, n_captions = (int(v) for v in size.split("x"))
    rng = np.random.default_rng(0)
    images = bench.random_embeddings(rng, n_images, REGIONS, dim)
    captions = bench.random_embeddings(rng, n_captions, WORDS, dim)
    if keras.backend.backend() != "tensorflow":
        # Device arrays, as a user's would be after the encoders.
        images, captions = ops.convert_to_tensor(images), ops.convert_to_tensor(captions)

    def floor(images, captions):
        return ops.matmul(ops.reshape(images, (-1, dim)),
                          ops.transpose(ops.reshape(captions, (-1, dim))))

    layers = {"layer": StackedCrossAttention("t2i", lambda_softmax=9.0),
              "layer, op by op": StackedCrossAttention("t2i", lambda_softmax=9.0,
                                                       jit_compile=False)}
    if keras.backend.backend() == "tensorflow":
        # "auto" compiles only calls of a few tiles there (layers/eager.py).
        layers["layer, jit_compile=True"] = StackedCrossAttention(
            "t2i", lambda_softmax=9.0, jit_compile=True)
    if keras.backend.backend() == "torch":
        layers["layer, torch.compile"] = StackedCrossAttention(
            "t2i", lambda_softmax=9.0, torch_compile=True)
    first = {}
    for name, layer in layers.items():
        started = time.perf_counter()
        bench.sync(layer(images, captions))
        first[name] = time.perf_counter() - started
    fns = {"floor": (floor, 0)}
    fns.update({name: (layer, 0) for name, layer in layers.items()})
    timed = bench._interleaved(fns, (images, captions), repeats)
    floor_seconds = timed["floor"][0]
    rows = [{"backend": keras.backend.backend(), "size": size, "method": "floor",
             "ms": 1e3 * floor_seconds, "ratio": 1.0, "first_s": None, "compilations": None}]
    for name, layer in layers.items():
        rows.append({
            "backend": keras.backend.backend(), "size": size, "method": name,
            "ms": 1e3 * timed[name][0], "ratio": timed[name][0] / floor_seconds,
            "first_s": first[name], "compilations": traces(layer),
        })
    return rows


def print_table(rows):
    print("| backend | images x captions | method | ms | / floor | first call (s) | "
          "compilations |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        first = "" if row["first_s"] is None else f"{row['first_s']:.2f}"
        count = "" if row["compilations"] is None else str(row["compilations"])
        print(f"| {row['backend']} | {row['size']} | {row['method']} | {row['ms']:.0f} | "
              f"{row['ratio']:.2f}x | {first} | {count} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"])
    parser.add_argument("--sizes", nargs="+", default=["100x250", "1000x500"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dim", type=int, default=DIM)
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for size in args.sizes:
        if len(size.split("x")) != 2 or not all(v.isdigit() for v in size.split("x")):
            parser.error(f"--sizes: expected IMAGESxCAPTIONS such as 100x250, not {size!r}")
    if args.child:  # one backend, in this process: rows as JSON on stdout
        rows = [row for size in args.sizes for row in measure(size, args.repeats, args.dim)]
        print("ROWS " + json.dumps(rows))
        return
    rows = []
    for backend in args.backends:
        print(f"measuring {backend} ...", flush=True)
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        result = subprocess.run(
            [sys.executable, __file__, "--child", "--sizes", *args.sizes,
             "--repeats", str(args.repeats), "--dim", str(args.dim)],
            capture_output=True, text=True, env=env,
        )
        lines = [line for line in result.stdout.splitlines() if line.startswith("ROWS ")]
        if result.returncode != 0 or not lines:
            sys.exit(f"{backend} failed:\n{result.stderr[-3000:]}")
        rows += json.loads(lines[-1][5:])
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
