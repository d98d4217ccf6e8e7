"""The main demo, end to end in a reduced size, as a user runs it."""

import json
import os
import subprocess
import sys

import pytest

from scan_keras.chance import chance_metrics
from scan_keras.demo import DEMO_PRESET, RANGES_FILE, format_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Training runs, subprocesses or the site build: left out of the fast suite
# (`pytest -m "not slow"`).
pytestmark = pytest.mark.slow


# The demo's code is the same on every backend (the world, two trainings with
# `train`, `evaluate`, figures in NumPy); what differs by backend, the layers
# and `fit`, is tested per backend elsewhere. So it runs once, not three times.
@pytest.mark.once
def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [
            sys.executable, "-m", "scan_keras", "demo",
            "--out", str(out), "--train-images", "160", "--epochs", "2",
        ],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # Output to a pipe: one line per epoch, no redrawn progress bars.
    assert "\r" not in done.stdout and "\x1b" not in done.stdout
    results = json.loads((out / "results.json").read_text())
    assert set(results["models"]) == {"SCAN t2i AVG", "global embedding"}
    for metrics in results["models"].values():
        assert 0 <= metrics["rsum"] <= 600
        assert 0 <= metrics["grounding_accuracy"] <= 100
    assert 0 < results["chance"]["grounding_accuracy"] < 50
    # The table, the figures and the model are where the output says.
    assert format_results(results).splitlines()[0] in done.stdout
    for path in list(results["figures"].values()) + [results["model_path"]]:
        assert os.path.getsize(path) > 10_000, path
        assert path in done.stdout
    for run in ("scan", "global"):
        log = (out / run / "log.csv").read_text().splitlines()
        assert len(log) == 1 + 2  # header and one row per epoch

    # The world is an ordinary precomputed folder: `evaluate` reads it and,
    # finding its ground truth, reports grounding as the demo did.
    from scan_keras.cli import main

    record = tmp_path / "eval.json"
    argv = ["evaluate", results["model_path"], "--data-dir", str(out / "world")]
    assert main(argv + ["--json", str(record)]) == 0
    record = json.loads(record.read_text())
    scan = results["models"]["SCAN t2i AVG"]
    assert record["metrics"]["rsum"] == pytest.approx(scan["rsum"], abs=1e-3)
    assert record["grounding"]["accuracy"] == pytest.approx(
        scan["grounding_accuracy"], abs=1e-3
    )


def test_demo_refuses_a_used_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    from scan_keras.cli import main

    assert main(["demo", "--out", str(tmp_path)]) == 2


def test_demo_recipe_is_the_papers_t2i_avg():
    assert (DEMO_PRESET.cross_attn, DEMO_PRESET.agg_func) == ("t2i", "mean")
    assert DEMO_PRESET.lambda_softmax == 9.0
    assert DEMO_PRESET.max_violation and DEMO_PRESET.margin == 0.2
    assert DEMO_PRESET.grad_clip == 2.0


@pytest.mark.parametrize("value", ["0", "-3"])
def test_demo_rejects_bad_sizes(tmp_path, value, capsys):
    from scan_keras.cli import main

    assert main(["demo", "--out", str(tmp_path / "x"), "--train-images", value]) == 2
    assert "train_images" in capsys.readouterr().err


def _demo_table_script():
    import importlib.util

    path = os.path.join(ROOT, "scripts", "demo_table.py")
    spec = importlib.util.spec_from_file_location("demo_table_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_documented_demo_table_is_the_stored_runs():
    # docs/reproducing.md quotes the demo over seeds (JAX), mean ± sd and
    # range, from notebooks/results/demo_table.csv; the demo prints the
    # ranges of scan_keras/demo_ranges.json, made from the same rows.
    script = _demo_table_script()
    rows = script.read_rows(os.path.join(ROOT, "notebooks", "results", "demo_table.csv"))
    stats = script.summarise(rows, "jax")
    assert json.load(open(RANGES_FILE)) == json.loads(json.dumps(script.ranges(rows)))
    assert sorted({int(r["seed"]) for r in rows if r["backend"] == "jax"}) == [0, 1, 2, 3, 4]
    docs = open(os.path.join(ROOT, "docs", "reproducing.md"), encoding="utf-8").read()
    chance = chance_metrics(200, 5)
    labels = {
        "sentence R@1": "i2t_r1", "sentence R@5": "i2t_r5", "sentence R@10": "i2t_r10",
        "image R@1": "t2i_r1", "image R@5": "t2i_r5", "image R@10": "t2i_r10",
        "rsum (of 600)": "rsum", "grounding accuracy %": "grounding_accuracy",
        "attention on the named region %": "attention_mass",
    }

    def cell(model, key):
        mean, sd, low, high, n = stats[model, key]
        assert n == 5
        return f"{mean:.1f} ± {sd:.1f} ({low:.1f}-{high:.1f})"

    for label, key in labels.items():
        # The chance column: the closed form for 200 images, where it is quoted.
        quoted = key in ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5", "rsum")
        chance_cell = f" {chance[key]:.1f} |" if quoted else " |"
        line = f"| {label} | {cell('SCAN t2i AVG', key)} | {cell('global embedding', key)} |"
        assert line + chance_cell in docs, line
    # "SCAN's lowest rsum is about twice the baseline's highest."
    ratio = stats["SCAN t2i AVG", "rsum"][2] / stats["global embedding", "rsum"][3]
    assert round(ratio, 1) in (1.9, 2.0, 2.1)


def test_the_table_prints_each_figure_beside_its_range_over_seeds():
    metrics = {key: 10.0 * k for k, key in enumerate(
        ["i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5", "rsum", "grounding_accuracy", "attention_mass"])}
    results = {"models": {"SCAN t2i AVG": metrics, "global embedding": metrics},
               "chance": {"rsum": 15.9}}
    ranges = {"seeds": [0, 1, 2], "models": {"SCAN t2i AVG": {
        key: {"min": value - 1.25, "max": value + 2.0} for key, value in metrics.items()}}}
    lines = format_results(results, ranges).splitlines()
    assert lines[0].startswith("test split [range, 3 seeds]")
    rsum = next(line for line in lines if line.startswith("rsum (of 600)"))
    # This run's figure, then its range; no range for a model without one.
    assert rsum.split()[3:] == ["40.0", "[38.8-42.0]", "40.0", "15.9"]
    assert "[" not in format_results(results)


def test_the_documented_demo_times_are_the_stored_runs():
    script = _demo_table_script()
    rows = script.read_rows(os.path.join(ROOT, "notebooks", "results", "demo_table.csv"))

    def mean(backend, column, model="SCAN t2i AVG"):
        values = [float(r[column]) for r in rows if r["backend"] == backend and r["model"] == model]
        assert values, (backend, column)
        return sum(values) / len(values)

    minutes = {b: round(mean(b, "total_seconds") / 60) for b in ("jax", "tensorflow", "torch")}
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert (f"the demo takes about {minutes['jax']} minutes with JAX ({minutes['tensorflow']} "
            f"with TensorFlow, Keras'\n#    default; {minutes['torch']} with PyTorch)") in readme
    for page in ("index.md", "cli.md", "reproducing.md"):
        text = open(os.path.join(ROOT, "docs", page), encoding="utf-8").read()
        assert f"about {minutes['jax']} minutes" in text, page
    performance = open(os.path.join(ROOT, "docs", "performance.md"), encoding="utf-8").read()
    names = {"jax": "JAX", "tensorflow": "TensorFlow", "torch": "PyTorch"}
    for backend, name in names.items():
        line = (f"| {name} | {mean(backend, 'world_seconds'):.1f} s "
                f"| {mean(backend, 'train_seconds'):.1f} s "
                f"| {mean(backend, 'train_seconds', 'global embedding'):.1f} s "
                f"| {mean(backend, 'figures_seconds'):.1f} s "
                f"| **{mean(backend, 'total_seconds'):.1f} s** |")
        assert line in performance, line
        total = round(mean(backend, "total_seconds"))
        assert f"{total // 60} min {total % 60} s" in performance, backend
