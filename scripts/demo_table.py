"""The demo's table over seeds: what `scan-keras demo` gives, as a range.

    KERAS_BACKEND=jax .venv/bin/python scripts/demo_table.py --seeds 0 1 2 3 4

Runs `scan_keras.demo.run_demo` once per seed (each seed makes its own
world, initial weights and batch order) and writes one row per (seed,
model, backend) to `notebooks/results/demo_table.csv`: the test recalls, rsum,
grounding, and the seconds of each stage of the run. The CSV is rewritten
after every seed under a temporary name, and the seeds already in it for
the backend are skipped, so an interrupted run continues where it stopped. It prints, per
model and metric, the mean ± sd and the range over the seeds:
`docs/reproducing.md`, the README and notebook 04 quote them (and tests
assert them against the CSV). From the JAX rows it also writes
`scan_keras/demo_ranges.json`, the ranges `scan-keras demo` prints beside
its own run.
"""

import argparse
import csv
import os
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = (
    "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum",
    "grounding_accuracy", "attention_mass",
)
FIELDS = ("seed", "model", *METRICS, "train_seconds", "world_seconds",
          "figures_seconds", "total_seconds", "backend")


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def summarise(rows, backend="jax"):
    """`{(model, metric): (mean, sd, min, max, runs)}` over the seeds of one
    backend (sd with ddof=1)."""
    rows = [r for r in rows if r["backend"] == backend]
    out = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        for metric in METRICS + ("total_seconds",):
            values = np.array([float(r[metric]) for r in rows if r["model"] == model])
            sd = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            out[model, metric] = (
                float(values.mean()), sd, float(values.min()), float(values.max()), len(values)
            )
    return out


def ranges(rows, backend="jax"):
    """What `scan_keras/demo_ranges.json` holds: per model and metric, the
    mean, sd, min and max over the seeds of one backend."""
    stats = summarise(rows, backend)
    return {
        "backend": backend,
        "seeds": sorted({int(r["seed"]) for r in rows if r["backend"] == backend}),
        "made_by": "scripts/demo_table.py",
        "models": {
            model: {
                metric: dict(zip(("mean", "sd", "min", "max"), stats[model, metric][:4]))
                for metric in METRICS
            }
            for model in dict.fromkeys(m for m, _ in stats)
        },
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", default=os.path.join(ROOT, "notebooks", "results", "demo_table.csv"))
    args = parser.parse_args(argv)

    import keras

    from scan_keras.atomic import atomic_path, write_json
    from scan_keras.demo import RANGES_FILE, run_demo

    backend = keras.backend.backend()
    rows = read_rows(args.out) if os.path.exists(args.out) else []
    done = {(int(r["seed"]), r["backend"]) for r in rows}
    for seed in args.seeds:
        if (seed, backend) in done:
            continue
        with tempfile.TemporaryDirectory() as folder:
            results = run_demo(os.path.join(folder, "demo"), seed=seed, verbose=0)
        stages = results["stage_seconds"]
        for model, metrics in results["models"].items():
            rows.append(dict(
                {m: round(float(metrics[m]), 2) for m in METRICS},
                seed=seed, model=model, train_seconds=round(stages[model], 1),
                world_seconds=round(stages["world"], 1),
                figures_seconds=round(stages["figures"], 1),
                total_seconds=round(results["seconds"], 1),
                backend=backend,
            ))
            print(rows[-1], flush=True)
        with atomic_path(args.out) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    if any(r["backend"] == "jax" for r in rows):
        write_json(RANGES_FILE, ranges(rows), indent=1)
    print("\n| model | metric | mean ± sd | range | seeds |")
    print("| --- | --- | --- | --- | ---: |")
    for (model, metric), (mean, sd, low, high, n) in summarise(rows, backend).items():
        print(f"| {model} | {metric} | {mean:.1f} ± {sd:.1f} | {low:.1f}-{high:.1f} | {n} |")


if __name__ == "__main__":
    main()
