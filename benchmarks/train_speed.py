"""Training speed: steps per second of `model.fit` with a preset's recipe.

Times, side by side in one run:
- `precomp/N`: the real pipeline, `PairBatches` reading a memory-mapped
  `train_ims.npy` written in the released layout, N threads preparing
  batches (0: read in the train step's thread);
- `in-memory`: the same model fitted on NumPy arrays already in memory,
  batches of the same shapes (the data pipeline's cost is the difference).

Data are random, of the real shapes by default (29000 images x 36 x 2048,
captions of 8-20 words), written to a temporary folder first.

    KERAS_BACKEND=jax python benchmarks/train_speed.py              # GPU
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
        vocabulary = Vocabulary.build(split.captions[:50000], min_count=1)
        for name in presets:
            preset = get_preset(name)
            overrides = {"img_dim": args.img_dim}
            if args.embed_size:
                overrides["embed_size"] = args.embed_size
            pipelines = {
                workers: PairBatches(
                    split, vocabulary, batch_size=args.batch_size, seed=0,
                    pad_to_multiple=8, workers=workers,
                )
                for workers in args.workers
            }
            batches = pipelines[args.workers[0]]
            # In-memory arrays of the same shapes: 50 distinct batches.
            n = min(50 * args.batch_size, len(split.captions))
            first = [batches[k] for k in range(n // args.batch_size)]
            width = max(b["token_ids"].shape[1] for b in first)
            memory = {
                "features": np.concatenate([b["features"] for b in first]),
                "token_ids": np.concatenate([
                    np.pad(b["token_ids"], ((0, 0), (0, width - b["token_ids"].shape[1])))
                    for b in first
                ]),
            }
            runs = [("in-memory", memory, {"batch_size": args.batch_size,
                                           "steps_per_epoch": len(first)})]
            runs += [
                (f"precomp/{w}", pipe, {"steps_per_epoch": len(pipe), "shuffle": False})
                for w, pipe in pipelines.items()
            ]
            for label, data, kwargs in runs:
                keras.utils.set_random_seed(0)
                model = SCAN.from_preset(preset, vocabulary=vocabulary, **overrides)
                model.build()
                compile_scan(model, preset.learning_rate, preset.grad_clip)
                seconds = time_fit(model, data, args.steps, args.warmup, **kwargs)
                rows.append((name, label, 1.0 / seconds, 1000 * seconds))
                print(f"{name:<14}{label:<11}{1 / seconds:8.1f} steps/s")

    print(
        f"\nbackend {keras.backend.backend()}, keras {keras.__version__}, "
        f"batch {args.batch_size}, {args.images} x {args.regions} x {args.img_dim} "
        f"features, embed {args.embed_size or 1024}"
    )
    print(f"{'preset':<14}{'data':<11}{'steps/s':>9}{'ms/step':>9}")
    for name, label, rate, ms in rows:
        print(f"{name:<14}{label:<11}{rate:9.1f}{ms:9.2f}")


if __name__ == "__main__":
    main()
