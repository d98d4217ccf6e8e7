"""The paper's ablation questions, asked on the built-in world.

Each variant is one change from a base recipe (`scan_keras.demo.DEMO_PRESET`,
SCAN t-i AVG), trained with the same data, seed and epochs by
`scan_keras.training.train`, then scored on the test split: the recalls
and the grounding accuracy of its words' attention.

| question | variants | the paper |
| --- | --- | --- |
| t-i or i-t, AVG or LSE | `t2i_avg`, `t2i_lse`, `i2t_avg`, `i2t_lse` | Tables 1-2 |
| the softmax temperature lambda_1 | `t2i_lambda1_*` | Tables 1-2 (9 for t-i, 4 for i-t) |
| normalising the raw similarities | `t2i_<norm>` | section 3.2 "Text-Image Stacked Cross Attention"; reference code options |
| hardest or summed negatives | `t2i_sum_negatives` | Table 4 |
| pooling by max or sum instead of AVG | `t2i_max_pool`, `t2i_sum_pool` | Table 4 |
| normalising the image vectors | `t2i_no_imgnorm` | Table 4 |
| a bidirectional or one-directional GRU | `t2i_one_way_gru` | Table 4 |
| the t-i + i-t ensemble | `ensemble_t2i_avg+i2t_avg` | Tables 1-2 |
| attention, Sum-Max or a global embedding | `t2i_sum_max`, `global` | Table 3 (its global model is VSE++) |

The tables are those of the paper's section 4 "Experiments".

`run_ablations` is what notebook 05 runs at a reduced size and what
`scripts/run_ablations.py` runs at full size, once per training seed, for
the committed table. On the built-in world a run either leaves the
collapsed start (every score alike, rsum at chance) or stays there,
depending on the seed; `summarise` counts the runs that escaped
(`ESCAPED_RSUM`) and gives the mean and spread of those.
"""

import csv
import dataclasses
import os
import time

import keras
import numpy as np

from scan_keras.data import load_grounding, load_split
from scan_keras.evaluation import evaluate, grounding_accuracy
from scan_keras.atomic import atomic_path
from scan_keras.baselines import GlobalEmbedding, SumMax
from scan_keras.models import SCAN
from scan_keras.training import BEST_MODEL, LAST_MODEL, train


@dataclasses.dataclass(frozen=True)
class Variant:
    """One ablation: a question, a label and the changes to the base recipe.

    Args:
        name: short identifier, also the run's folder name.
        question: the group it answers, for tables and plots.
        changes: fields of `scan_keras.presets.Preset` that differ from
            the base recipe (for example `{"cross_attn": "i2t"}`).
        model_class: `SCAN`, or a model without attention
            (`scan_keras.baselines`).
        ensemble: names of trained variants whose similarity matrices are
            averaged instead of training a model (the paper's t-i + i-t).
    """

    name: str
    question: str
    changes: dict = dataclasses.field(default_factory=dict)
    model_class: type = SCAN
    ensemble: tuple = ()


# The paper's i-t settings: lambda_1 = 4, lambda_2 = 5 (Flickr30K).
_I2T = {"cross_attn": "i2t", "lambda_softmax": 4.0, "lambda_lse": 5.0}

VARIANTS = (
    Variant("t2i_avg", "formulation and pooling"),
    Variant("t2i_lse", "formulation and pooling", {"agg_func": "logsumexp"}),
    Variant("i2t_avg", "formulation and pooling", dict(_I2T)),
    Variant("i2t_lse", "formulation and pooling", dict(_I2T, agg_func="logsumexp")),
    Variant("t2i_lambda1_1", "lambda_1", {"lambda_softmax": 1.0}),
    Variant("t2i_lambda1_4", "lambda_1", {"lambda_softmax": 4.0}),
    Variant("t2i_lambda1_20", "lambda_1", {"lambda_softmax": 20.0}),
    Variant("t2i_l2norm", "normalisation", {"raw_feature_norm": "l2norm"}),
    Variant("t2i_softmax", "normalisation", {"raw_feature_norm": "softmax"}),
    Variant("t2i_no_norm", "normalisation", {"raw_feature_norm": "no_norm"}),
    Variant("t2i_sum_negatives", "negatives", {"max_violation": False}),
    Variant("t2i_max_pool", "formulation and pooling", {"agg_func": "max"}),
    Variant("t2i_sum_pool", "formulation and pooling", {"agg_func": "sum"}),
    Variant("t2i_no_imgnorm", "encoders", {"no_imgnorm": True}),
    Variant("t2i_one_way_gru", "encoders", {"bidirectional": False}),
    Variant("ensemble_t2i_avg+i2t_avg", "ensemble", ensemble=("t2i_avg", "i2t_avg")),
    Variant("t2i_sum_max", "without attention", model_class=SumMax),
    Variant("global", "without attention", model_class=GlobalEmbedding),
)

# A run escaped the collapsed start when its rsum (test, or validation in
# scripts/demo_seeds.py) is above this: chance is 15.9 for the world's 200
# test images (`scan_keras.chance`), a run that learned anything scores well
# above 100.
ESCAPED_RSUM = 100.0

COLUMNS = (
    "variant",
    "question",
    "seed",
    "i2t_r1",
    "i2t_r5",
    "i2t_r10",
    "t2i_r1",
    "t2i_r5",
    "t2i_r10",
    "rsum",
    "grounding_accuracy",
    "attention_mass",
    "seconds",
)


def get_variants(names=None):
    """The variants named (all of `VARIANTS` if None), in `VARIANTS` order.

    An ensemble needs its members: asking for one adds them.
    """
    by_name = {v.name: v for v in VARIANTS}
    if names is None:
        return list(VARIANTS)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(
            f"Unknown ablation variant(s) {unknown}: expected names from "
            f"{list(by_name)}."
        )
    wanted = set(names)
    for name in names:
        wanted.update(by_name[name].ensemble)
    return [v for v in VARIANTS if v.name in wanted]


def run_ablations(
    data_dir,
    out_dir,
    base,
    variants=None,
    epochs=None,
    seed=0,
    verbose=0,
    log=print,
):
    """Trains and scores each variant on a world folder.

    Args:
        data_dir: a built-in world written by
            `scan_keras.data.write_world` (it needs the grounding files).
        out_dir: a new folder; each variant's run goes to a sub-folder.
        base: the base `Preset`, such as `scan_keras.demo.DEMO_PRESET`.
        variants: names of `VARIANTS` (all if None).
        epochs: training epochs (the base preset's if None).
        seed: the same seed for every variant: the same initial weights
            where shapes agree, and the same batch order.
        verbose: Keras' `fit` verbosity.
        log: called with one line per finished variant (None: silent).

    Returns:
        A list of dicts with the keys of `COLUMNS`, one per variant.
        Grounding is NaN for an ensemble (two attentions, no one map).
    """
    test = load_split(data_dir, "test")
    groundings = load_grounding(data_dir, "test")
    trained, rows = {}, []
    for variant in get_variants(variants):
        started = time.perf_counter()
        if variant.ensemble:
            members = [trained[name] for name in variant.ensemble]
            metrics = evaluate(members, test, verbose=0)
            grounding = {"accuracy": float("nan"), "attention_mass": float("nan")}
        else:
            preset = dataclasses.replace(
                base, name=variant.name, **variant.changes
            )
            run_dir = os.path.join(out_dir, variant.name)
            # A finished run (kept by an interrupted table) is read, not redone.
            if not os.path.exists(os.path.join(run_dir, LAST_MODEL)):
                train(
                    preset,
                    data_dir,
                    run_dir,
                    epochs=epochs,
                    seed=seed,
                    verbose=verbose,
                    model_class=variant.model_class,
                    workers=2,
                )
            # As the paper: the epoch with the best validation rsum.
            model = keras.saving.load_model(os.path.join(run_dir, BEST_MODEL))
            trained[variant.name] = model
            metrics = evaluate(model, test, verbose=0)
            grounding = grounding_accuracy(model, test, groundings)
        row = {key: metrics[key] for key in COLUMNS if key in metrics}
        row.update(
            variant=variant.name,
            question=variant.question,
            seed=seed,
            grounding_accuracy=grounding["accuracy"],
            attention_mass=grounding["attention_mass"],
            seconds=time.perf_counter() - started,
        )
        rows.append(row)
        if log is not None:
            log(
                f"{variant.name:<26} rsum {row['rsum']:6.1f}  "
                f"grounding {row['grounding_accuracy']:5.1f}%  "
                f"({row['seconds']:.0f} s)"
            )
    return rows


def write_table(rows, path):
    """Writes `run_ablations` rows as CSV (values rounded to 0.1), under a
    temporary name renamed when complete."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    key: (
                        int(value) if key == "seed"
                        else f"{value:.1f}" if isinstance(value, float) else value
                    )
                    for key, value in row.items()
                }
            )


def read_table(path):
    """Reads a table written by `write_table`: a list of dicts of floats."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"No ablation table at {path}.")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    # Tables of one seed made before the seed column read as seed 0.
    if not rows or set(rows[0]) not in (set(COLUMNS), set(COLUMNS) - {"seed"}):
        raise ValueError(
            f"{path} is not an ablation table: expected the columns {list(COLUMNS)}."
        )
    table = []
    for line, row in enumerate(rows, start=2):
        try:
            table.append(
                {
                    key: (value if key in ("variant", "question") else float(value))
                    for key, value in row.items()
                }
            )
        except (TypeError, ValueError):
            raise ValueError(
                f"{path}, line {line}: expected numbers in every column but "
                f"'variant' and 'question'. Received: {row}"
            ) from None
        table[-1].setdefault("seed", 0.0)
    return table


def summarise(rows, escaped_rsum=ESCAPED_RSUM):
    """Each variant over its seeds: how many runs escaped the collapsed
    start, and the mean and standard deviation (ddof=1) of the escaped runs.

    Args:
        rows: `run_ablations` or `read_table` rows, one per variant and seed.
        escaped_rsum: a run escaped when its test rsum is above this.

    Returns:
        A list of dicts, one per variant in the order of `rows`: `variant`,
        `question`, `runs`, `escaped`, and `<column>_mean`, `<column>_sd`
        for the recalls, rsum and grounding columns (NaN where fewer than
        one, or for the spread two, runs escaped).
    """
    by_variant = {}
    for row in rows:
        by_variant.setdefault(row["variant"], []).append(row)
    metrics = [c for c in COLUMNS if c not in ("variant", "question", "seed", "seconds")]
    summary = []
    for variant, runs in by_variant.items():
        escaped = [r for r in runs if r["rsum"] > escaped_rsum]
        entry = {
            "variant": variant,
            "question": runs[0]["question"],
            "runs": len(runs),
            "escaped": len(escaped),
        }
        for column in metrics:
            values = np.array([r[column] for r in escaped], dtype=np.float64)
            entry[f"{column}_mean"] = float(values.mean()) if len(values) else float("nan")
            entry[f"{column}_sd"] = (
                float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            )
        summary.append(entry)
    return summary


def format_summary(summary):
    """`summarise`'s result as a fixed-width text table."""
    lines = [
        f"{'variant':<26}{'escaped':>9}{'rsum (escaped runs)':>22}{'grounding %':>16}"
    ]
    for entry in summary:
        rsum = _mean_sd(entry["rsum_mean"], entry["rsum_sd"])
        grounding = _mean_sd(
            entry["grounding_accuracy_mean"], entry["grounding_accuracy_sd"]
        )
        escaped = f"{entry['escaped']}/{entry['runs']}"
        lines.append(f"{entry['variant']:<26}{escaped:>9}{rsum:>22}{grounding:>16}")
    return "\n".join(lines)


def _mean_sd(mean, sd):
    if np.isnan(mean):
        return "-"
    return f"{mean:.1f}" if np.isnan(sd) else f"{mean:.1f} ± {sd:.1f}"


def format_table(rows):
    """The rows as a fixed-width text table (R@1 both ways, rsum, grounding)."""
    lines = [
        f"{'variant':<26}{'i2t R@1':>9}{'t2i R@1':>9}{'rsum':>8}{'grounding %':>13}"
    ]
    for row in rows:
        grounding = row["grounding_accuracy"]
        grounding = "-" if np.isnan(grounding) else f"{grounding:.1f}"
        lines.append(
            f"{row['variant']:<26}{row['i2t_r1']:>9.1f}{row['t2i_r1']:>9.1f}"
            f"{row['rsum']:>8.1f}{grounding:>13}"
        )
    return "\n".join(lines)
