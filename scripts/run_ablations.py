"""The full-size ablation table that notebook 05 reads: every variant, over seeds.

    KERAS_BACKEND=tensorflow .venv/bin/python scripts/run_ablations.py --seeds 0 1 2 3 4

Generates the built-in world at its default size (`--world-seed`, 0), then
for each training seed trains every variant of `scan_keras.ablations.VARIANTS`
with the demo's recipe (`scan_keras.demo.DEMO_PRESET`) and scores it on the
test split. After each seed it rewrites `ablations_seeds.csv` (one row per
variant and seed) and `ablations_seeds.json` (the settings, machine and
minutes per seed) in `--out`, and prints the summary: per variant, how many
seeds escaped the collapsed start and the mean ± sd of those that did.

Each seed trains in a process of its own. Seeds already in the table are
skipped, so the command can be run again after an interruption, or with more
seeds; with `--work-dir`, a seed cut short resumes its runs where they
stopped. About 20 minutes per seed on 2
CPU cores with TensorFlow (35 with JAX, whose training is slower on a CPU:
docs/performance.md).
"""

import argparse
import dataclasses
import os
import platform
import subprocess
import sys
import tempfile
import time

import keras

from scan_keras.ablations import (
    format_summary,
    get_variants,
    read_table,
    run_ablations,
    summarise,
    write_table,
)
from scan_keras.atomic import read_json, write_json
from scan_keras.data import write_world
from scan_keras.demo import DEMO_PRESET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE, RECORD = "ablations_seeds.csv", "ablations_seeds.json"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "notebooks", "results"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--variants", nargs="*", default=None)
    parser.add_argument("--work-dir", default=None, help="keeps the runs (default: a temporary folder)")
    args = parser.parse_args(argv)
    names = [v.name for v in get_variants(args.variants)]
    table_path = os.path.join(args.out, TABLE)
    record_path = os.path.join(args.out, RECORD)
    rows = read_table(table_path) if os.path.exists(table_path) else []
    record = read_json(record_path, "ablation record") if os.path.exists(record_path) else {
        "world": f"write_world(seed={args.world_seed}), default sizes",
        # img_dim comes from the data, not the preset.
        "base_preset": dict(
            name=DEMO_PRESET.name,
            **{
                k: v
                for part in (DEMO_PRESET.architecture, DEMO_PRESET.recipe)
                for k, v in dataclasses.asdict(part).items()
                if k != "img_dim"
            },
        ),
        "minutes_per_seed": {},
    }
    pending = [
        seed
        for seed in args.seeds
        if not set(names) <= {r["variant"] for r in rows if int(r["seed"]) == seed}
    ]
    print(f"seeds to run: {pending or 'none, all are in ' + table_path}")
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or tmp
        data_dir = os.path.join(work, "world")
        if pending and not os.path.exists(os.path.join(data_dir, "test_caps.txt")):
            write_world(data_dir, seed=args.world_seed)
        if len(pending) > 1:
            # One process per seed: TensorFlow keeps every compiled function
            # of a process, and after about 80 trainings (four seeds) the
            # process ran out of memory maps and crashed.
            for seed in pending:
                command = [sys.executable, os.path.abspath(__file__), "--seeds", str(seed),
                           "--out", args.out, "--world-seed", str(args.world_seed),
                           "--work-dir", work]
                if args.variants is not None:
                    command += ["--variants", *args.variants]
                subprocess.run(command, check=True)
            return
        for seed in pending:
            started = time.perf_counter()
            new = run_ablations(
                data_dir,
                os.path.join(work, f"runs_seed{seed}"),
                DEMO_PRESET,
                variants=args.variants,
                seed=seed,
            )
            rows = [r for r in rows if int(r["seed"]) != seed] + new
            record["minutes_per_seed"][str(seed)] = round(
                (time.perf_counter() - started) / 60, 1
            )
            record.update(
                command=f"KERAS_BACKEND={keras.backend.backend()} "
                ".venv/bin/python scripts/run_ablations.py",
                backend=keras.backend.backend(),
                keras=keras.__version__,
                machine=f"{platform.machine()}, {os.cpu_count()} cores, "
                f"{platform.python_version()}",
            )
            write_table(rows, table_path)
            write_json(record_path, record, indent=1)
            print(format_summary(summarise(rows)))


if __name__ == "__main__":
    main()
