"""Training with the paper's recipe on a generated precomputed-feature folder."""

import csv
import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from scan_keras.callbacks import step_decay
from scan_keras.data import load_split, write_toy_precomp
from scan_keras.evaluation import evaluate
from scan_keras.models import SCAN
from scan_keras.presets import get_preset
from scan_keras.training import BACKUP, BEST_MODEL, LAST_MODEL, LOG, train

# Training runs, subprocesses or the site build: left out of the fast suite
# (`pytest -m "not slow"`).
pytestmark = pytest.mark.slow

SMALL = dict(embed_size=32, word_dim=16)
# One decay after the first epoch, so that the log shows the schedule.
PRESET = dataclasses.replace(
    get_preset("f30k_t2i_avg"), learning_rate=2e-3, lr_update=2
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy_precomp")
    write_toy_precomp(
        str(path), n_images={"train": 480, "dev": 40, "test": 40}, seed=3
    )
    return str(path)


def read_log(out):
    with open(os.path.join(out, LOG)) as f:
        return list(csv.DictReader(f))


def weights_of(model):
    return [np.array(w) for w in model.get_weights()]


class StopAfterEpoch(keras.callbacks.Callback):
    """Simulates a run killed right after an epoch's backup was written."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("killed")


def test_step_decay_is_the_reference_schedule():
    schedule = step_decay(2e-4, 15)
    assert [schedule(e) for e in (0, 14)] == [2e-4, 2e-4]
    np.testing.assert_allclose([schedule(15), schedule(29), schedule(30)], [2e-5, 2e-5, 2e-6])
    with pytest.raises(ValueError, match="lr_update"):
        step_decay(2e-4, 0)


KWARGS = dict(epochs=3, batch_size=32, verbose=0, **SMALL)


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
    """One uninterrupted run of 3 epochs: (out_dir, model, history)."""
    out = str(tmp_path_factory.mktemp("runs") / "straight")
    model, history = train(PRESET, data_dir, out, **KWARGS)
    return out, model, history


def test_fit_improves_recall_and_keeps_the_best_model(data_dir, finished):
    out, model, history = finished
    test = load_split(data_dir, "test")
    untrained = SCAN.from_preset(
        PRESET, vocabulary=model.vocabulary, img_dim=test.img_dim, **SMALL
    )
    before = evaluate(untrained, test, verbose=0)
    after = evaluate(model, test, verbose=0)
    assert after["rsum"] > before["rsum"] + 50

    losses = history.history["loss"]
    assert losses[-1] < 0.9 * losses[0]
    rows = read_log(out)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    np.testing.assert_allclose(
        [float(r["learning_rate"]) for r in rows], [2e-3, 2e-3, 2e-4], rtol=1e-6
    )
    assert all(float(r["val_rsum"]) > 0 for r in rows)

    # The best model is the epoch with the highest validation rsum, and
    # loading it gives back exactly its recalls.
    with open(os.path.join(out, BEST_MODEL + ".json")) as f:
        record = json.load(f)
    best_epoch = int(np.argmax([float(r["val_rsum"]) for r in rows]))
    assert record["epoch"] == best_epoch + 1
    best = keras.saving.load_model(os.path.join(out, BEST_MODEL))
    metrics = evaluate(best, load_split(data_dir, "dev"), verbose=0)
    for name in ("i2t_r1", "t2i_r5", "rsum"):
        assert metrics[name] == pytest.approx(record[name])
    assert os.path.exists(os.path.join(out, LAST_MODEL))
    assert not os.path.exists(os.path.join(out, BACKUP))


def test_an_interrupted_run_resumes_where_it_stopped(data_dir, finished, tmp_path):
    out = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        train(PRESET, data_dir, out, callbacks=[StopAfterEpoch(0)], **KWARGS)
    assert os.path.isdir(os.path.join(out, BACKUP))
    assert not os.path.exists(os.path.join(out, LAST_MODEL))
    # Resuming with other settings would mix two runs: refused.
    with pytest.raises(ValueError, match="batch_size"):
        train(PRESET, data_dir, out, **dict(KWARGS, batch_size=16))

    resumed, history = train(PRESET, data_dir, out, **KWARGS)
    assert len(history.history["loss"]) == 2  # epochs 1 and 2 only
    assert [int(r["epoch"]) for r in read_log(out)] == [0, 1, 2]
    # Weights, optimizer state, learning rate and batch order were all
    # restored: the result is the uninterrupted run's.
    for a, b in zip(weights_of(resumed), weights_of(finished[1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert os.path.exists(os.path.join(out, LAST_MODEL))


def test_output_folder_mistakes_are_refused(data_dir, finished, tmp_path):
    with pytest.raises(ValueError, match="finished run"):
        train(PRESET, data_dir, finished[0], **KWARGS)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        train(PRESET, data_dir, str(busy), **KWARGS)


def test_unknown_preset_and_missing_data(data_dir, tmp_path):
    with pytest.raises(ValueError, match="Unknown preset"):
        train("f30k_t2i_median", data_dir, str(tmp_path / "a"))
    with pytest.raises(FileNotFoundError):
        train("f30k_t2i_avg", str(tmp_path / "nowhere"), str(tmp_path / "b"))
