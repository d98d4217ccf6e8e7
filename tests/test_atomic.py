"""Files written whole or not at all: a failure mid-write leaves the old file."""

import json
import os
import stat

import keras
import numpy as np
import pytest

from scan_keras.atomic import atomic_path, read_json, save_model, write_json
from scan_keras.callbacks import RetrievalValidation

# Independent of the Keras backend (see conftest.py).
pytestmark = pytest.mark.once


def _leftovers(folder, keep):
    return sorted(set(os.listdir(folder)) - set(keep))


def test_write_json_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "run.json"
    write_json(path, {"epochs": 4})
    assert read_json(path) == {"epochs": 4}
    # json.dump writes part of the object before it meets the bad value.
    with pytest.raises(TypeError):
        write_json(path, {"epochs": 5, "bad": object()})
    assert read_json(path) == {"epochs": 4}
    assert _leftovers(tmp_path, ["run.json"]) == []
    mode = stat.S_IMODE(os.stat(path).st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_a_failed_model_save_keeps_the_previous_model(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    path = str(tmp_path / "model_best.keras")
    save_model(model, path)
    before = open(path, "rb").read()

    class Interrupted(Exception):
        pass

    with pytest.raises(Interrupted):
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"PK\x03\x04 half a zip")
            raise Interrupted  # as a kill or a full disk would stop the write
    assert open(path, "rb").read() == before
    assert _leftovers(tmp_path, ["model_best.keras"]) == []
    keras.saving.load_model(path)


def test_an_unreadable_best_record_is_named(tmp_path):
    record = tmp_path / "model_best.keras.json"
    record.write_text("")
    callback = RetrievalValidation(
        np.zeros((2, 3, 4), "float32"), np.ones((10, 3), "int32"),
        filepath=str(tmp_path / "model_best.keras"),
    )
    with pytest.raises(ValueError, match=f"{record}.*not valid JSON"):
        callback.on_train_begin()
    record.write_text(json.dumps({"epoch": 2}))
    with pytest.raises(ValueError, match="no 'rsum'"):
        callback.on_train_begin()
