"""Training speed: steps per second of `model.fit` with a preset's recipe.

Times, side by side in one run, one model per preset fitted on:
- `precomp/N`: the real pipeline, `PairBatches` reading a memory-mapped
  `train_ims.npy` written in the released layout, N threads preparing
  batches (0: read in the train step's thread);
- `in-memory`: 50 of those batches as NumPy arrays already in memory,
  through Keras' own array pipeline (captions padded to the longest);
- `on-device`: the same 50 batches, each of its own caption width, already
  converted to backend tensors (on the GPU under JAX): the train step
  alone, the ceiling of any pipeline;
- `reader/N` (no model): `PairBatches` alone, batches per second that N
  threads deliver, to compare with the steps per second above.

Data are random, of the real shapes by default (29000 images x 36 x 2048,
captions of 8-20 words), written to a temporary folder first.

    KERAS_BACKEND=jax python benchmarks/train_speed.py              # GPU
    KERAS_BACKEND=jax python benchmarks/train_speed.py --dtype mixed_bfloat16
    python benchmarks/train_speed.py --images 600 --embed-size 128 --steps 10  # CPU
"""

import argparse
import os
import tempfile
import time

import numpy as np


def write_random_precomp(path, n_images, n_regions, img_dim, vocab_words, seed=0):
    from scan_keras.data import write_split

    rng = np.random.default_rng(seed)
    words = [f"w{k}" for k in range(vocab_words)]

    def captions(n):
        lengths = rng.integers(8, 21, size=n)
        return [" ".join(rng.choice(words, size=k)) for k in lengths]

    # Written in chunks through a memmap: the train split is 8.5 GB.
    ims = np.lib.format.open_memmap(
        os.path.join(path, "train_ims.npy"), mode="w+", dtype="float32",
        shape=(n_images, n_regions, img_dim),
    )
    for start in range(0, n_images, 1000):
        stop = min(start + 1000, n_images)
        ims[start:stop] = rng.random((stop - start, n_regions, img_dim), "float32")
    ims.flush()
    del ims
    with open(os.path.join(path, "train_caps.txt"), "w") as f:
        f.write("\n".join(captions(5 * n_images)) + "\n")
    n_dev = 50
    write_split(
        path, "dev",
        rng.random((n_dev, n_regions, img_dim), "float32"), captions(5 * n_dev),
    )


def time_fit(model, data, steps, warmup, steps_per_epoch, **fit_kwargs):
    """Seconds per step of `fit`, after `warmup` steps (compilation).

    Whole epochs of `steps_per_epoch` batches are run, at least `steps`
    batches in all.
    """
    model.fit(data, epochs=1, steps_per_epoch=min(warmup, steps_per_epoch),
              verbose=0, **fit_kwargs)
    epochs = max(1, -(-steps // steps_per_epoch))
    per_epoch = min(steps, steps_per_epoch)
    start = time.perf_counter()
    model.fit(data, epochs=epochs, steps_per_epoch=per_epoch, verbose=0, **fit_kwargs)
    return (time.perf_counter() - start) / (epochs * per_epoch)


def time_reader(batches, steps):
    """Seconds per batch that `batches` delivers with nothing consuming them."""
    batches.set_epoch(batches.epoch + 1)  # batches no fit has read ahead
    steps = min(steps, len(batches))
    start = time.perf_counter()
    for index in range(steps):
        batches[index]
    return (time.perf_counter() - start) / steps


def in_memory_arrays(batches):
    """`batches` as two arrays, every caption padded to the longest."""
    width = max(b["token_ids"].shape[1] for b in batches)
    return {
        "features": np.concatenate([b["features"] for b in batches]),
        "token_ids": np.concatenate([
            np.pad(b["token_ids"], ((0, 0), (0, width - b["token_ids"].shape[1])))
            for b in batches
        ]),
    }


def on_device_batches(batches):
    """A dataset serving `batches` as backend tensors, converted once.

    Each batch keeps its own caption width, as the real pipeline's do.
    """
    import keras

    class OnDevice(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.batches = [
                {key: keras.ops.convert_to_tensor(value) for key, value in batch.items()}
                for batch in batches
            ]

        def __len__(self):
            return len(self.batches)

        def __getitem__(self, index):
            return self.batches[index]

    return OnDevice()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=["f30k_t2i_avg"], nargs="+")
    parser.add_argument("--images", type=int, default=29000)
    parser.add_argument("--regions", type=int, default=36)
    parser.add_argument("--img-dim", type=int, default=2048)
    parser.add_argument("--embed-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 4])
    parser.add_argument("--dtype", default=None,
                        help="the model's dtype policy, e.g. mixed_bfloat16")
    parser.add_argument("--product-dtype", default=None,
                        help="the attention's product_dtype, e.g. bfloat16")
    parser.add_argument("--tmp-dir", default=None,
                        help="where to write the data (e.g. /dev/shm)")
    args = parser.parse_args()

    import keras

    from scan_keras.data import PairBatches, Vocabulary, load_split
    from scan_keras.models import SCAN
    from scan_keras.presets import get_preset
    from scan_keras.training import compile_scan

    presets = args.preset
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp_dir) as path:
        t0 = time.perf_counter()
        write_random_precomp(path, args.images, args.regions, args.img_dim, 8000)
        print(f"wrote {args.images} images in {time.perf_counter() - t0:.0f} s")
        split = load_split(path, "train")
        # Reads check each image for NaN the first time only: check them all
        # now, so that every row times the steady state of later epochs.
        split.check_finite()
        vocabulary = Vocabulary.build(split.captions[:50000], min_count=1)
        for name in presets:
            preset = get_preset(name)
            overrides = {"img_dim": args.img_dim}
            if args.embed_size:
                overrides["embed_size"] = args.embed_size
            if args.dtype:
                overrides["dtype"] = args.dtype
            if args.product_dtype:
                overrides["product_dtype"] = args.product_dtype
            pipelines = {
                workers: PairBatches(
                    split, vocabulary, batch_size=args.batch_size, seed=0,
                    pad_to_multiple=8, workers=workers,
                )
                for workers in args.workers
            }
            # 50 distinct full batches, in memory and on the device.
            n_batches = min(50, len(split.captions) // args.batch_size)
            first = [pipelines[args.workers[0]][k] for k in range(n_batches)]
            runs = [
                ("in-memory", in_memory_arrays(first),
                 {"batch_size": args.batch_size, "steps_per_epoch": n_batches}),
                ("on-device", on_device_batches(first),
                 {"steps_per_epoch": n_batches, "shuffle": False}),
            ]
            runs += [
                (f"precomp/{w}", pipe, {"steps_per_epoch": len(pipe), "shuffle": False})
                for w, pipe in pipelines.items()
            ]
            # One model for every row: it compiles once per batch shape, and
            # its weights do not change how long a step takes.
            keras.utils.set_random_seed(0)
            model = SCAN.from_preset(preset, vocabulary=vocabulary, **overrides)
            model.build()
            compile_scan(model, preset.learning_rate, preset.grad_clip)
            for label, data, kwargs in runs:
                seconds = time_fit(model, data, args.steps, args.warmup, **kwargs)
                rows.append((name, label, 1.0 / seconds, 1000 * seconds))
                print(f"{name:<14}{label:<11}{1 / seconds:8.1f} steps/s", flush=True)
            for w, pipe in pipelines.items():
                seconds = time_reader(pipe, args.steps)
                rows.append((name, f"reader/{w}", 1.0 / seconds, 1000 * seconds))
                print(f"{name:<14}reader/{w:<4}{1 / seconds:8.1f} batches/s (no model)",
                      flush=True)

    print(
        f"\nbackend {keras.backend.backend()}, keras {keras.__version__}, "
        f"batch {args.batch_size}, {args.images} x {args.regions} x {args.img_dim} "
        f"features, embed {args.embed_size or 1024}, dtype {args.dtype or 'float32'}, "
        f"product_dtype {args.product_dtype or 'the dtype'}"
    )
    print(f"{'preset':<14}{'data':<11}{'steps/s':>9}{'ms/step':>9}")
    for name, label, rate, ms in rows:
        print(f"{name:<14}{label:<11}{rate:9.1f}{ms:9.3f}")
    print("reader/N rows: batches/s and ms/batch of the pipeline alone, no model")


if __name__ == "__main__":
    main()
