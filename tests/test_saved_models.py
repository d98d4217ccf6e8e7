"""Models saved by scan-keras 0.1 load and score the same on every backend.

`tests/fixtures/*_v0.1.keras` were written by `make_saved_models.py` under
JAX, before the package's redesign; the redesign must keep them loading
(or fail with a message that says what to do).
"""

import os

import keras
import numpy as np
import pytest
from helpers import once

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


# Each backend saves a model with its own execution choice; the other two
# load it and must score as it did. Run in subprocesses, one per backend.
_SAVE = """
import sys, keras, numpy as np
from scan_keras.models import SCAN
backend, folder = keras.backend.backend(), sys.argv[1]
options = {
    "tensorflow": dict(cross_attn="t2i"),
    "jax": dict(cross_attn="i2t", lambda_softmax=4.0, implementation="pallas"),
    "torch": dict(cross_attn="t2i", agg_func="logsumexp", torch_compile=True),
}[backend]
keras.utils.set_random_seed(3)
model = SCAN(vocab_size=20, img_dim=16, embed_size=32, word_dim=8, **options)
model.attention.chunk_size = 2 if backend == "tensorflow" else None
data = np.load(folder + "/inputs.npz")
np.save(f"{folder}/{backend}.npy", model.similarity(data["features"], data["token_ids"]))
model.save(f"{folder}/{backend}.keras")
"""
_LOAD = """
import sys, keras, numpy as np
import scan_keras
folder, backend = sys.argv[1], keras.backend.backend()
data = np.load(folder + "/inputs.npz")
for saved in sys.argv[2:]:
    model = keras.saving.load_model(f"{folder}/{saved}.keras")
    sims = model.similarity(data["features"], data["token_ids"])
    np.testing.assert_allclose(sims, np.load(f"{folder}/{saved}.npy"), rtol=0, atol=1e-6)
    print(saved, "->", backend, float(np.abs(sims - np.load(f"{folder}/{saved}.npy")).max()))
"""


@pytest.mark.slow
@once
def test_a_model_saved_under_any_backend_scores_the_same_under_the_others(tmp_path):
    import subprocess
    import sys

    backends = ("tensorflow", "jax", "torch")
    rng = np.random.default_rng(0)
    token_ids = rng.integers(1, 20, size=(7, 6))
    token_ids[2, 3:] = 0
    np.savez(
        tmp_path / "inputs.npz",
        features=rng.random((5, 4, 16)).astype("float32"),
        token_ids=token_ids,
    )

    def run(code, backend, *args):
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
        done = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path), *args],
            env=env, capture_output=True, text=True, timeout=600,
        )
        assert done.returncode == 0, f"{backend}: {done.stderr[-3000:]}"
        return done.stdout

    for backend in backends:
        run(_SAVE, backend)
    for backend in backends:
        out = run(_LOAD, backend, *[b for b in backends if b != backend])
        assert out.count("->") == 2
