"""All-pairs similarity and evaluation: speed, memory and error, side by side.

For each size and each formulation (t2i, i2t) one run times:

- `floor`: the one product of all regions with all words, the arithmetic
  every method pays (`(I R, d) x (d, C W)`). Its output would not fit a
  GPU at the 5K shape (216 GB): there it is timed on a slice of the
  captions and scaled up;
- `literal`: the paper's equations as written, one attended d-vector per
  (image, caption, word) or (image, caption, region), written here for the
  benchmark with `keras.ops`;
- `scan`: `StackedCrossAttention`, float32 (on PyTorch with
  `torch_compile=True` unless `--eager`);
- `scan-bf16`: `StackedCrossAttention(product_dtype="bfloat16")`: bf16
  operands of the product, float32 everywhere after it;
- `pallas`, `pallas-bf16` (JAX, with `--methods`): the same with
  `implementation="pallas"`, one fused kernel; `--pallas-tiles 4x32w8 4x128w8:bf16` adds
  the kernel with other tiles (images x words a tile, Triton warps; bf16
  operands).

and, with `--evaluate`, the whole evaluation of a SCAN model with random
weights: `evaluate(model, split, "1k")` on a split written in the released
layout (read memory-mapped, captions tokenised, images and captions encoded,
all pairs scored, recalls ranked).

Every time is the median of `--repeats` calls after a warm-up call (which
compiles). The floor and the layers are called in turn, round after round,
so that a slow spell of the machine slows them all alike. `rel. error` is
max |S - S64| / max |S64| over a sample of pairs, S64 the literal equations
in float64 NumPy. `memory` is the extra memory a call needs: on JAX the
compiled program's temporaries and output (XLA's memory analysis),
elsewhere the growth of the process' resident memory. The table is printed
last.

    python benchmarks/similarity.py                          # CPU, 100 x 500
    KERAS_BACKEND=jax python benchmarks/similarity.py --sizes 1k 5k --evaluate
"""

import argparse
import os
import resource
import statistics
import tempfile
import threading
import time

import numpy as np

# name: (images, captions); 36 regions, 12 words, d = 1024 unless overridden.
SIZES = {
    "tiny": (20, 100),
    "cpu": (100, 500),
    "cpu-1k": (1000, 500),  # the 1K test images, a tenth of its captions
    "1k": (1000, 5000),
    "5k": (5000, 25000),
}
LAMBDA_SOFTMAX = {"t2i": 9.0, "i2t": 4.0}
EAGER = False  # set by --eager: no XLA on TensorFlow, no torch.compile


def random_embeddings(rng, n, length, dim, rank=64):
    """l2-normalised vectors with shared low-rank structure.

    Plain Gaussian vectors in 1024 dimensions are all nearly orthogonal;
    a shared subspace gives cosines spread like those of trained
    embeddings, so the attention is not uniform.
    """
    basis = np.random.default_rng(1234).normal(size=(rank, dim)) / np.sqrt(rank)
    x = rng.normal(size=(n, length, rank)) @ basis
    x += 0.5 * rng.normal(size=x.shape) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype("float32")


def literal_similarity(xp, images, captions, cross_attn, lambda_softmax,
                       eps=1e-8):
    """Eq. 1-4 (t2i) or 5-8 (i2t) as written, AVG pooling, no padding.

    `xp` is `numpy` (the float64 reference) or `keras.ops` (the timed
    literal version): both spell these functions the same way.
    """
    s = xp.einsum("ird,cwd->icrw", images, captions)
    clipped = xp.where(s > 0, s, 0.1 * s)
    if cross_attn == "t2i":
        # Normalise across words, softmax over regions, a_w = sum_r alpha v_r.
        norm = xp.sqrt(xp.sum(clipped * clipped, axis=-1, keepdims=True))
        x = lambda_softmax * clipped / (norm + eps)
        x = xp.exp(x - xp.max(x, axis=2, keepdims=True))
        alpha = x / xp.sum(x, axis=2, keepdims=True)
        attended = xp.einsum("icrw,ird->icwd", alpha, images)
        query = captions[None]  # (1, C, W, d)
    else:
        # Normalise across regions, softmax over words, a_r = sum_w alpha e_w.
        norm = xp.sqrt(xp.sum(clipped * clipped, axis=2, keepdims=True))
        x = lambda_softmax * clipped / (norm + eps)
        x = xp.exp(x - xp.max(x, axis=3, keepdims=True))
        alpha = x / xp.sum(x, axis=3, keepdims=True)
        attended = xp.einsum("icrw,cwd->icrd", alpha, captions)
        query = images[:, None]  # (I, 1, R, d)
    dot = xp.sum(query * attended, axis=-1)
    norms = xp.sqrt(xp.sum(query * query, axis=-1)) * xp.sqrt(
        xp.sum(attended * attended, axis=-1)
    )
    relevance = dot / xp.maximum(norms, eps)
    return xp.mean(relevance, axis=-1)


# --- timing and memory ------------------------------------------------------


def backend():
    import keras

    return keras.backend.backend()


def sync(x):
    """Waits for `x` to be computed, without copying it to the host.

    Eager TensorFlow and PyTorch on a CPU return computed tensors.
    """
    if backend() == "jax":
        import jax

        return jax.block_until_ready(x)
    if backend() == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    return x


def compile_fn(fn, *args):
    """`fn` compiled for `args`, and its memory need where XLA reports it.

    JAX: `jax.jit`. TensorFlow: `tf.function(jit_compile=True)` (XLA),
    unless `--eager`. PyTorch runs `fn` as it is: the layer compiles its
    chunks itself (`torch_compile`), and the floor is one product.
    """
    if backend() == "tensorflow" and not EAGER:
        import tensorflow as tf

        return tf.function(fn, jit_compile=True), None
    if backend() != "jax":
        return fn, None
    import jax

    compiled = jax.jit(fn).lower(*args).compile()
    analysis = compiled.memory_analysis()
    memory = None
    if analysis is not None:
        memory = analysis.temp_size_in_bytes + analysis.output_size_in_bytes
    return compiled, memory


class PeakRSS:
    """Samples the resident memory in a thread: peak growth in bytes."""

    def __enter__(self):
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())
        self.growth = self.peak - self.start


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def timed(fn, args, repeats, memory=None):
    """Median seconds of `fn(*args)` after one warm-up call, memory, output.

    `memory` is the growth of the resident memory during the warm-up call
    unless given.
    """
    return _interleaved({None: (fn, memory)}, args, repeats)[None]


def _interleaved(fns, args, repeats):
    """`timed` for `{name: (fn, memory)}`, one call of each per round."""
    results, times = {}, {}
    for name, (fn, memory) in fns.items():
        with PeakRSS() as rss:
            out = sync(fn(*args))
        results[name] = (rss.growth if memory is None else memory, out)
        times[name] = []
    for _ in range(repeats):
        for name, (fn, _) in fns.items():
            start = time.perf_counter()
            sync(fn(*args))
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]),) + results[name] for name in fns}


# --- the methods --------------------------------------------------------------


# The floor's output is (I R) x (C W) floats: 8.6 GB at the 1K shape, 216 GB
# at 5K. Above this many elements it is timed on a slice of the captions
# and scaled up (the product's time is linear in its width at such sizes).
FLOOR_MAX_ELEMENTS = 2**32


def floor_fn(n_images, n_regions, n_captions, n_words):
    """The floor, and the factor its time is multiplied by (see above)."""
    from keras import ops

    width = max(1, min(n_captions, FLOOR_MAX_ELEMENTS // (n_images * n_regions * n_words)))

    def floor(images, captions):
        n_images, n_regions, dim = images.shape
        words = ops.reshape(captions[:width], (-1, dim))
        return ops.matmul(ops.reshape(images, (-1, dim)), ops.transpose(words))

    return floor, n_captions / width


# label: (product_dtype, kernel) of the layer.
LAYER_METHODS = {
    "scan": (None, "portable"),
    "scan-bf16": ("bfloat16", "portable"),
    "pallas": (None, "pallas"),
    "pallas-bf16": ("bfloat16", "pallas"),
}


def scan_fn(cross_attn, product_dtype=None, kernel="portable"):
    from scan_keras.layers import StackedCrossAttention

    layer = StackedCrossAttention(
        cross_attn,
        lambda_softmax=LAMBDA_SOFTMAX[cross_attn],
        product_dtype=product_dtype,
        torch_compile=not EAGER,
        implementation=kernel,
    )
    return lambda images, captions: layer(images, captions)


def pallas_tiles_fn(cross_attn, text):
    """The fused kernel with other tiles than the layer's: `"8x64w8"`, or
    `"8x64w8:bf16"` with bf16 operands."""
    from scan_keras.layers.pallas import kernel as pallas_attention, tiles as pallas_tiles

    text, _, dtype = text.partition(":")
    tiles = pallas_tiles.parse_tiles(text)
    product_dtype = {"": None, "bf16": "bfloat16"}[dtype]

    def scores(images, captions):
        return pallas_attention.similarities(
            images, captions, cross_attn=cross_attn,
            lambda_softmax=LAMBDA_SOFTMAX[cross_attn], tiles=tiles,
            product_dtype=product_dtype,
        )

    return scores


def literal_fn(cross_attn, n_images, n_regions, n_words, dim, budget=2**26):
    """The literal equations, captions in chunks that keep the attended
    vectors under `budget` elements."""
    from keras import ops

    chunk = max(1, budget // (n_images * max(n_regions, n_words) * dim))

    def one_chunk(images, captions):
        return literal_similarity(
            ops, images, captions, cross_attn, LAMBDA_SOFTMAX[cross_attn]
        )

    return chunk, one_chunk


def run_literal(cross_attn, images, captions, repeats):
    from keras import ops

    n_images, n_regions, dim = images.shape
    n_captions, n_words, _ = captions.shape
    chunk, one_chunk = literal_fn(cross_attn, n_images, n_regions, n_words, dim)
    chunk = min(chunk, n_captions)
    n_chunks = -(-n_captions // chunk)
    padded = ops.pad(captions, ((0, n_chunks * chunk - n_captions), (0, 0), (0, 0)))
    pieces = [padded[k * chunk : (k + 1) * chunk] for k in range(n_chunks)]
    fn, memory = compile_fn(one_chunk, images, pieces[0])

    def literal(images, captions):
        out = [fn(images, piece) for piece in pieces]
        return ops.concatenate(out, axis=1)[:, :n_captions]

    return timed(literal, (images, captions), repeats, memory)


def relative_error(sims, reference, rows, cols):
    from keras import ops

    got = ops.convert_to_numpy(ops.cast(sims, "float32"))[np.ix_(rows, cols)]
    return float(np.max(np.abs(got - reference)) / np.max(np.abs(reference)))


def bench_matrix(size, n_images, n_captions, args, rows_out):
    from keras import ops

    rng = np.random.default_rng(0)
    images_np = random_embeddings(rng, n_images, args.regions, args.dim)
    captions_np = random_embeddings(rng, n_captions, args.words, args.dim)
    images = ops.convert_to_tensor(images_np)
    captions = ops.convert_to_tensor(captions_np)
    # The float64 reference on a sample of pairs.
    rows = np.sort(rng.choice(n_images, min(n_images, 8), replace=False))
    cols = np.sort(rng.choice(n_captions, min(n_captions, 40), replace=False))
    im64 = images_np[rows].astype(np.float64)
    cap64 = captions_np[cols].astype(np.float64)

    floor, floor_scale = floor_fn(n_images, args.regions, n_captions, args.words)
    methods = {"floor": floor}
    for cross_attn in args.cross_attn:
        for label in args.methods:
            methods[cross_attn, label] = scan_fn(cross_attn, *LAYER_METHODS[label])
        for text in args.pallas_tiles:
            methods[cross_attn, f"pallas {text}"] = pallas_tiles_fn(cross_attn, text)
    timings = time_side_by_side(methods, (images, captions), args.repeats)
    floor_seconds, floor_memory, _ = timings.pop("floor")
    floor_seconds *= floor_scale
    shape = f"{n_images}x{n_captions}"
    for cross_attn in args.cross_attn:
        reference = literal_similarity(
            np, im64, cap64, cross_attn, LAMBDA_SOFTMAX[cross_attn]
        )
        results = [("floor", floor_seconds, floor_memory, None)]
        n_pairs = n_images * n_captions
        if n_pairs <= args.literal_max_pairs:
            seconds, memory, out = run_literal(
                cross_attn, images, captions, max(1, args.repeats // 3)
            )
            results.append(
                ("literal", seconds, memory, relative_error(out, reference, rows, cols))
            )
        for key, (seconds, memory, out) in timings.items():
            if key[0] != cross_attn:
                continue
            label = key[1]
            results.append(
                (label, seconds, memory, relative_error(out, reference, rows, cols))
            )
        for label, seconds, memory, error in results:
            rows_out.append(
                (size, shape, cross_attn, label, seconds, seconds / floor_seconds,
                 memory, error)
            )
            print(f"{size:<5} {cross_attn} {label:<10} {1000 * seconds:10.1f} ms",
                  flush=True)


def time_side_by_side(fns, args, repeats):
    """`timed` for each of `fns` (compiled first), their calls interleaved.

    Each round calls every function once, so a slow spell of the machine
    costs them all alike and their ratios hold; timed one after another,
    the floor and the layer would be measured seconds apart (on the 2-core
    CI machine the floor alone drifted by 15% between runs). Returns
    `{name: (median seconds, memory, output of the warm-up call)}`.
    """
    compiled = {}
    for name, fn in fns.items():
        try:
            compiled[name] = compile_fn(fn, *args)
        except Exception as error:  # noqa: BLE001
            # One method that does not compile (a kernel on a new GPU)
            # must not cost the others' rows.
            print(f"{name}: failed to compile: {type(error).__name__}: "
                  f"{str(error)[:500]}", flush=True)
    return _interleaved(compiled, args, repeats)


def bench_evaluation(size, n_images, args, rows_out):
    """`evaluate(model, split, "1k")` of an untrained SCAN, end to end."""
    import keras

    from scan_keras.data import Vocabulary, load_split, write_split
    from scan_keras.evaluation import evaluate
    from scan_keras.models import SCAN
    from scan_keras.presets import get_preset

    protocol = "5k" if size == "5k" else "1k"
    rng = np.random.default_rng(0)
    words = [f"w{k}" for k in range(8000)]
    lengths = rng.integers(8, 17, size=5 * n_images)  # mean 12 words
    captions = [" ".join(rng.choice(words, size=k)) for k in lengths]
    with tempfile.TemporaryDirectory(dir=args.tmp_dir) as path:
        features = rng.random((n_images, args.regions, 2048), dtype="float32")
        write_split(path, "test", features, captions)
        del features
        split = load_split(path, "test")
        vocabulary = Vocabulary.build(captions, min_count=1)
        for cross_attn in args.cross_attn:
            keras.utils.set_random_seed(0)
            preset = get_preset(f"f30k_{cross_attn}_avg")
            model = SCAN.from_preset(
                preset, vocabulary=vocabulary, torch_compile=not EAGER,
                implementation=args.kernel,
            )
            model.build()

            def run():
                return evaluate(model, split, protocol, verbose=0)

            seconds, memory, _ = timed(lambda: run(), (), max(1, args.repeats // 3))
            rows_out.append(
                (size, f"{n_images}x{5 * n_images}", cross_attn, "evaluate",
                 seconds, None, memory, None)
            )
            print(f"{size:<5} {cross_attn} evaluate   {seconds:10.3f} s", flush=True)


def device_name():
    if backend() == "jax":
        import jax

        return str(jax.devices()[0].device_kind)
    if backend() == "torch":
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return "cpu"


def mode():
    if backend() == "jax":
        return "jax.jit"
    if backend() == "tensorflow":
        return "eager" if EAGER else "tf.function(jit_compile=True)"
    return "eager" if EAGER else "torch.compile of each chunk"


def print_table(rows, args):
    import keras

    print(
        f"\nbackend {backend()} ({device_name()}), keras {keras.__version__}, "
        f"{args.regions} regions, {args.words} words, d = {args.dim}; "
        f"median of {args.repeats}; {mode()}"
    )
    print("| size | images x captions | attn | method | time (ms) | / floor "
          "| memory (MB) | rel. error |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: |")
    for size, shape, cross_attn, label, seconds, ratio, memory, error in rows:
        ratio = "" if ratio is None else f"{ratio:.2f}"
        memory = "" if memory is None else f"{memory / 2**20:.0f}"
        error = "" if error is None else f"{error:.1e}"
        print(f"| {size} | {shape} | {cross_attn} | {label} | "
              f"{1000 * seconds:.1f} | {ratio} | {memory} | {error} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["cpu"], choices=SIZES)
    parser.add_argument("--cross-attn", nargs="+", default=["t2i", "i2t"])
    parser.add_argument("--methods", nargs="+", default=["scan", "scan-bf16"],
                        choices=LAYER_METHODS,
                        help="which versions of the layer to time")
    parser.add_argument("--pallas-tiles", nargs="*", default=[],
                        help="also time the fused kernel with these tiles, "
                        "e.g. 4x32, 4x32w8, 4x32w8s3 or 4x128w8:bf16 (JAX)")
    parser.add_argument("--regions", type=int, default=36)
    parser.add_argument("--words", type=int, default=12)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--literal-max-pairs", type=float, default=5e6,
                        help="skip the literal version above this many pairs")
    parser.add_argument("--evaluate", action="store_true",
                        help="also time the whole evaluation of a model")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="time the evaluation alone (no matrix rows)")
    parser.add_argument("--kernel", default="portable", choices=("portable", "pallas"),
                        help="the attention kernel of the evaluated model")
    parser.add_argument("--tmp-dir", default=None)
    parser.add_argument("--eager", action="store_true",
                        help="run eagerly: TensorFlow without XLA, "
                        "PyTorch without torch.compile")
    args = parser.parse_args()
    global EAGER
    EAGER = args.eager

    rows = []
    for size in args.sizes:
        n_images, n_captions = SIZES[size]
        if not args.evaluate_only:
            bench_matrix(size, n_images, n_captions, args, rows)
        if args.evaluate or args.evaluate_only:
            bench_evaluation(size, n_images, args, rows)
    print_table(rows, args)


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "jax")
    main()
