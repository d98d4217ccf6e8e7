"""The main demo, end to end in a reduced size, as a user runs it."""

import json
import os
import subprocess
import sys

import pytest

from scan_keras.chance import chance_metrics
from scan_keras.demo import DEMO_PRESET, format_results

# Training runs, subprocesses or the site build: left out of the fast suite
# (`pytest -m "not slow"`).
pytestmark = pytest.mark.slow


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


def test_the_documented_demo_table_is_the_stored_run():
    # docs/reproducing.md and notebook 4 quote one run of the demo (seed 0);
    # notebooks/results/demo_seed0.json is that run's results.json.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    stored = json.load(open(os.path.join(root, "notebooks/results/demo_seed0.json")))
    scan, base = stored["models"]["SCAN t2i AVG"], stored["models"]["global embedding"]
    docs = open(os.path.join(root, "docs/reproducing.md"), encoding="utf-8").read()
    rows = {
        "sentence R@1": "i2t_r1", "sentence R@5": "i2t_r5", "sentence R@10": "i2t_r10",
        "image R@1": "t2i_r1", "image R@5": "t2i_r5", "image R@10": "t2i_r10",
        "rsum (of 600)": "rsum", "grounding accuracy %": "grounding_accuracy",
        "attention on the named region %": "attention_mass",
    }
    for label, key in rows.items():
        assert f"| {label} | {scan[key]:.1f} | {base[key]:.1f} |" in docs, label
    # The chance column is the closed form for the split's 200 images.
    chance = chance_metrics(200, 5)
    for label, key in (("sentence R@1", "i2t_r1"), ("sentence R@5", "i2t_r5"),
                       ("image R@1", "t2i_r1"), ("image R@5", "t2i_r5"),
                       ("rsum (of 600)", "rsum")):
        assert stored["chance"][key] == pytest.approx(chance[key]), key
        assert f"| {base[key]:.1f} | {chance[key]:.1f} |" in docs, label
    notebook = json.load(open(os.path.join(root, "notebooks/04_training_on_the_world.ipynb")))
    text = "".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown")
    for label, key in (("R@1 image -> text", "i2t_r1"), ("R@1 text -> image", "t2i_r1"),
                       ("rsum (of 600)", "rsum"), ("grounding accuracy %", "grounding_accuracy"),
                       ("attention on the named region %", "attention_mass")):
        assert f"| {label} | {scan[key]:.1f} | {base[key]:.1f} |" in text, label
    assert f"rsum is {scan['rsum'] / base['rsum']:.1f} times" in text
    assert f"right {base['grounding_accuracy']:.0f}% of the time" in text
    assert f"put {scan['attention_mass']:.0f}% of their weight" in text
