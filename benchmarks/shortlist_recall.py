"""Recall of the two-stage search against full SCAN, on the built-in world.

Generates the built-in world with a test split of `--test-images` images
(1,000 by default, 5,000 captions: the size of Flickr30K's test set),
trains SCAN (t2i AVG), the global-embedding baseline, and SCAN with a
second, global head (`global_loss_weight=1`) with the demo's recipe, and
evaluates on the test split, protocol "1k" (all images at once):

- `full SCAN`: all n x 5n pairs scored (`evaluation.evaluate`);
- `two-stage <dual>` at each shortlist k of `--ks`: each caption's k
  images and each image's k captions shortlisted by the dual encoder
  (`mean`: SCAN's own encoders, mean-pooled; `global`: the baseline),
  re-ranked by SCAN, the rest ranked after (`two_stage_metrics`);
- `full SCAN, two heads` and `two-stage joint`: the same for the model
  trained with both heads, which shortlists with its own mean-pooled
  vectors and re-ranks with its attention.

Beside the recalls: the pairs SCAN scores for the text queries and the
factor fewer than all pairs, and the time per text query end to end
(median over `--queries` test captions): for full SCAN, `Collection.
rank_images` (one caption against every image); for the two stages,
`TwoStageSearch.query_text` on an exact (flat) index of the split. The
time of the evaluation itself (all pairs, or the shortlists) is shown
too. The table is printed last and written as JSON
(`benchmarks/results/shortlist_recall.json` by default).

    python benchmarks/shortlist_recall.py                    # about 20 min on 2 cores
    python benchmarks/shortlist_recall.py --train-images 200 --test-images 100 \\
        --epochs 1 --ks 10 20 --queries 10 --json /tmp/shortlist.json   # a quick check

`--work` keeps the world, the models and the indexes between runs (a
second run reuses them).
"""

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time

import keras
import numpy as np

from scan_keras.data import load_split, write_world
from scan_keras.demo import DEMO_PRESET
from scan_keras.evaluation import evaluate
from scan_keras.baselines import GlobalEmbedding
from scan_keras.models import SCAN
from scan_keras.retrieval import TwoStageSearch, two_stage_metrics
from scan_keras.search import Collection
from scan_keras.training import BEST_MODEL, train

RECALLS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def prepare(work, train_images, test_images, epochs, seed, warmup_epochs):
    """The world and the two trained models, made once per `work` folder."""
    data = os.path.join(work, "world")
    sizes = {"train": train_images, "dev": max(20, train_images // 12), "test": test_images}
    marker = os.path.join(data, "sizes.json")
    if not os.path.exists(marker) or json.load(open(marker)) != sizes:
        print(f"generating the world {sizes} in {data}")
        write_world(data, sizes=sizes, seed=seed)
        with open(marker, "w") as f:
            json.dump(sizes, f)
    preset = dataclasses.replace(
        DEMO_PRESET, num_epochs=epochs or DEMO_PRESET.num_epochs, warmup_epochs=warmup_epochs)
    paths = {}
    models = (("scan", SCAN, {}), ("global", GlobalEmbedding, {}),
              ("joint", SCAN, {"global_loss_weight": 1.0}))
    for name, cls, overrides in models:
        run = os.path.join(work, f"{name}_{train_images}_{preset.num_epochs}")
        paths[name] = os.path.join(run, BEST_MODEL)
        if not os.path.exists(paths[name]):
            print(f"training {name} for {preset.num_epochs} epochs in {run}")
            train(preset, data, run, seed=seed, verbose=2, model_class=cls, workers=2,
                  **overrides)
    return data, paths


def median_ms(fn, queries):
    fn(queries[0])  # compiles
    times = []
    for query in queries:
        started = time.perf_counter()
        fn(query)
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-images", type=int, default=2500)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--epochs", type=int, help="training epochs (the demo's)")
    parser.add_argument("--warmup-epochs", type=int, default=1,
                        help="epochs of the summed hinge before the hardest negatives (1: "
                        "every seed of the demo's world leaves the collapsed start)")
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 50, 100, 200])
    parser.add_argument("--duals", nargs="+", default=["mean", "global", "joint"],
                        choices=("mean", "global", "joint"))
    parser.add_argument("--queries", type=int, default=100, help="captions timed per method")
    parser.add_argument("--work", help="folder kept between runs (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=os.path.join(RESULTS, "shortlist_recall.json"))
    args = parser.parse_args()

    work = args.work or tempfile.mkdtemp(prefix="shortlist_recall-")
    data, paths = prepare(work, args.train_images, args.test_images, args.epochs, args.seed,
                          args.warmup_epochs)
    model = keras.saving.load_model(paths["scan"], compile=False)
    baseline = keras.saving.load_model(paths["global"], compile=False)
    joint = keras.saving.load_model(paths["joint"], compile=False)
    split = load_split(data, "test")
    n = split.n_images
    rng = np.random.default_rng(args.seed)
    queries = [split.captions[c] for c in rng.choice(split.n_captions, args.queries, replace=False)]

    rows = []
    full = [("full SCAN", model)] + ([("full SCAN, two heads", joint)]
                                     if "joint" in args.duals else [])
    for label, scorer in full:
        started = time.perf_counter()
        metrics = evaluate(scorer, split, verbose=0)
        seconds = time.perf_counter() - started
        collection = Collection(scorer, data, "test")
        rows.append({
            "method": label, "shortlist": n, **metrics,
            "t2i_pairs": n * split.n_captions, "i2t_pairs": n * split.n_captions,
            "evaluation_seconds": seconds,
            "ms_per_text_query": median_ms(lambda q: collection.rank_images(q, k=10), queries),
        })
    for name in args.duals:
        # (re-ranking model, dual encoder kind, dual model)
        reranker, dual, dual_model = {
            "mean": (model, "mean", None), "global": (model, "global", baseline),
            "joint": (joint, "mean", None)}[name]
        index = TwoStageSearch.build(
            reranker, data, os.path.join(work, f"index_{name}"), split="test", dual=dual,
            dual_model=dual_model, verbose=False,
        )
        for k in args.ks:
            if k > n:
                continue
            started = time.perf_counter()
            metrics, cost = two_stage_metrics(
                reranker, split, k, dual=dual, dual_model=dual_model)
            seconds = time.perf_counter() - started
            rows.append({
                "method": f"two-stage {name}", "shortlist": k, **metrics, **cost,
                "evaluation_seconds": seconds,
                "ms_per_text_query": median_ms(
                    lambda q, k=k: index.query_text(q, k=min(10, k), shortlist=k), queries),
            })

    all_pairs = n * split.n_captions
    print(f"\nbuilt-in world, test split: {n} images, {split.n_captions} captions; "
          f"backend {keras.backend.backend()}; SCAN trained on {args.train_images} images")
    print("| method | k | i2t R@1 | R@5 | R@10 | t2i R@1 | R@5 | R@10 | rsum | "
          "pairs (text queries) | fewer | eval s | ms / text query |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        recalls = " | ".join(f"{row[name]:.1f}" for name in RECALLS)
        print(f"| {row['method']} | {row['shortlist']} | {recalls} | {row['rsum']:.1f} | "
              f"{row['t2i_pairs']:,} | {all_pairs / row['t2i_pairs']:.0f}x | "
              f"{row['evaluation_seconds']:.1f} | {row['ms_per_text_query']:.1f} |")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({
            "backend": keras.backend.backend(), "train_images": args.train_images,
            "test_images": n, "test_captions": split.n_captions, "rows": rows,
        }, f, indent=1)
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
