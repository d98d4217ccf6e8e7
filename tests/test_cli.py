"""The `scan-keras` command, run as a user runs it: in a subprocess."""

import json
import os
import subprocess
import sys
import zipfile

import pytest

from scan_keras.data import write_toy_precomp

# Independent of the Keras backend (see conftest.py).
pytestmark = pytest.mark.once


def scan_keras(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "scan_keras", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("toy_precomp"))
    write_toy_precomp(path, n_images={"train": 80, "dev": 20, "test": 20}, seed=5)
    return path


@pytest.mark.slow
def test_help_explains_presets_and_protocols():
    done = scan_keras("train", "--help")
    assert done.returncode == 0
    assert "f30k_t2i_avg" in done.stdout and "_ims.npy" in done.stdout
    done = scan_keras("evaluate", "--help")
    assert done.returncode == 0
    assert "5fold1k" in done.stdout and "ensemble" in done.stdout


@pytest.mark.slow
def test_train_then_evaluate(data_dir, tmp_path, capsys):
    out = str(tmp_path / "run")
    done = scan_keras(
        "train", "--preset", "f30k_i2t_avg", "--data-dir", data_dir,
        "--out", out, "--epochs", "1", "--batch-size", "40",
        "--embed-size", "16", "--word-dim", "8",
        "--product-dtype", "bfloat16", "--torch-compile", "--workers", "0",
        "--global-loss-weight", "0.5",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "best validation model" in done.stdout
    # Output to a pipe: one line per epoch, no redrawn progress bars.
    assert "\r" not in done.stdout and "\x1b" not in done.stdout
    assert done.stdout.count(" - loss: ") == 1  # the one epoch, on one line
    model = os.path.join(out, "model_best.keras")
    # The options reach the saved model (a .keras file is a zip with its
    # config); how it ran (torch.compile) is no part of it.
    with zipfile.ZipFile(model) as archive:
        config = json.loads(archive.read("config.json"))["config"]
    attention = config["similarity"]["config"]
    assert attention["product_dtype"] == "bfloat16" and "torch_compile" not in attention
    assert config["preset"] == "f30k_i2t_avg"
    assert config["global_loss_weight"] == 0.5

    report = str(tmp_path / "eval.json")
    done = scan_keras(
        "evaluate", "--data-dir", data_dir, "--split", "test",
        "--protocol", "1k", "--json", report, model, model,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # The preset is read from the models' names: two i2t AVG models are
    # not an ensemble the paper printed, but one alone is.
    with open(report) as f:
        result = json.load(f)
    assert result["split"] == "test" and len(result["models"]) == 2
    assert 0 <= result["metrics"]["i2t_r1"] <= 100
    assert result["metrics"]["rsum"] == pytest.approx(
        sum(result["metrics"][k] for k in
            ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"))
    )

    # 20 test images: scored, but not beside the paper's 1,000-image row.
    done = scan_keras("evaluate", "--data-dir", data_dir, "--json", report, model)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "not shown" in done.stdout and "paper f30k_i2t_avg" not in done.stdout
    with open(report) as f:
        assert json.load(f)["paper"] is None

    from scan_keras.cli import main

    for protocol in ("5fold1k", "5k"):
        assert main(["evaluate", "--data-dir", data_dir, "--protocol", protocol, model]) == 2
        assert "needs the 5000 images" in capsys.readouterr().err

    flickr_size = str(tmp_path / "flickr_size")
    write_toy_precomp(flickr_size, n_images={"test": 1000}, seed=6)
    assert main(["evaluate", "--data-dir", flickr_size, "--json", report, model]) == 0
    printed = capsys.readouterr().out
    assert "paper f30k_i2t_avg" in printed  # the paper's row beside ours
    assert "67.9" in printed  # its sentence R@1 (Table 1)
    with open(report) as f:
        assert json.load(f)["paper"]["metrics"]["i2t_r1"] == 67.9


@pytest.mark.slow
def test_bad_input_gets_one_clear_line(data_dir, tmp_path):
    done = scan_keras(
        "train", "--preset", "f30k_t2i_best", "--data-dir", data_dir,
        "--out", str(tmp_path / "x"),
    )
    assert done.returncode == 2
    assert "Unknown preset" in done.stderr and "Traceback" not in done.stderr
    done = scan_keras(
        "evaluate", "--data-dir", data_dir, str(tmp_path / "missing.keras")
    )
    assert done.returncode == 2 and "missing.keras" in done.stderr
    done = scan_keras("evaluate", "--data-dir", data_dir, "--protocol", "2k", "m")
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_bad_names_are_refused_before_any_file(data_dir, tmp_path, capsys):
    from scan_keras.cli import main

    for option, value, message in (
        ("--optimizer", "adamw", "Unknown optimizer"),
        ("--tokenizer", "spacy", "Unknown tokenizer"),
    ):
        out = tmp_path / option.strip("-")
        argv = ["train", "--preset", "f30k_t2i_avg", "--data-dir", data_dir,
                "--out", str(out), option, value]
        assert main(argv) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()


def test_paper_row_is_guessed_from_the_models_presets():
    from types import SimpleNamespace

    from scan_keras.cli import _guess_paper_name
    from scan_keras.layers import GlobalSimilarity, StackedCrossAttention

    def named(*presets, layer=StackedCrossAttention):
        return [SimpleNamespace(preset=p, similarity_layer=layer()) for p in presets]

    assert _guess_paper_name(named("f30k_t2i_avg")) == "f30k_t2i_avg"
    # An ensemble in either order finds the paper's row.
    for order in [("i2t_lse", "t2i_avg"), ("t2i_avg", "i2t_lse")]:
        models = named(*(f"f30k_{part}" for part in order))
        assert _guess_paper_name(models) == "f30k_t2i_avg+i2t_lse"
    assert _guess_paper_name(named("coco_t2i_avg", "coco_t2i_lse")) == (
        "coco_t2i_avg+t2i_lse"
    )
    # Models of no preset, and the global baseline, get no row and no error.
    assert _guess_paper_name(named(None)) is None
    assert _guess_paper_name(named("f30k_t2i_avg", None)) is None
    assert _guess_paper_name(named("f30k_t2i_avg", layer=GlobalSimilarity)) is None
