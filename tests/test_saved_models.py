"""Models saved by scan-keras 0.1 load and score the same on every backend.

`tests/fixtures/*_v0.1.keras` were written by `make_saved_models.py` under
JAX, before the package's redesign; the redesign must keep them loading
(or fail with a message that says what to do).
"""

import os

import keras
import numpy as np
import pytest

import scan_keras  # noqa: F401  (registers the package's classes)

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


@pytest.mark.parametrize("name", ["scan_i2t_lse", "global"])
def test_a_saved_v0_1_model_loads_and_scores_the_same(name):
    stored = np.load(os.path.join(FIXTURES, "saved_models_v0.1.npz"))
    model = keras.saving.load_model(os.path.join(FIXTURES, f"{name}_v0.1.keras"))
    sims = model.similarity(stored["features"], stored["token_ids"])
    np.testing.assert_allclose(sims, stored[f"{name}_similarity"], rtol=1e-5, atol=1e-6)
    assert model.vocabulary.tokenizer == "regex"
    assert type(model.optimizer).__name__ == "TorchAdam"
    assert int(model.optimizer.iterations) == 2
