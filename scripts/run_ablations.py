"""The full-size ablation table that notebook 05 shows beside its quick run.

    KERAS_BACKEND=jax .venv/bin/python scripts/run_ablations.py

Generates the built-in world at its default size (seed 0), trains every
variant of `scan_keras.ablations.VARIANTS` with the demo's recipe
(`scan_keras.demo.DEMO_PRESET`) and writes `notebooks/results/ablations.csv`
(and `ablations.json`: the settings, machine and time). About 15 minutes on
2 CPU cores.
"""

import argparse
import json
import os
import platform
import tempfile
import time

import keras

from scan_keras.ablations import format_table, run_ablations, write_table
from scan_keras.data import write_world
from scan_keras.demo import DEMO_PRESET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "notebooks", "results"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="*", default=None)
    parser.add_argument("--work-dir", default=None, help="keeps the runs (default: a temporary folder)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or tmp
        data_dir = os.path.join(work, "world")
        write_world(data_dir, seed=args.seed)
        rows = run_ablations(
            data_dir,
            os.path.join(work, "runs"),
            DEMO_PRESET,
            variants=args.variants,
            seed=args.seed,
        )
    os.makedirs(args.out, exist_ok=True)
    write_table(rows, os.path.join(args.out, "ablations.csv"))
    record = {
        "command": "KERAS_BACKEND=jax .venv/bin/python scripts/run_ablations.py",
        "seed": args.seed,
        # img_dim comes from the data, not the preset.
        "base_preset": {
            k: v for k, v in vars(DEMO_PRESET).items() if k not in ("paper", "img_dim")
        },
        "world": "write_world(seed), default sizes",
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "minutes": round((time.perf_counter() - started) / 60, 1),
    }
    with open(os.path.join(args.out, "ablations.json"), "w") as f:
        json.dump(record, f, indent=1)
    print(format_table(rows))


if __name__ == "__main__":
    main()
