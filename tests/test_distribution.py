"""Training under keras.distribution.DataParallel gives the one-device loss."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

# Training runs, subprocesses or the site build: left out of the fast suite
# (`pytest -m "not slow"`).
pytestmark = pytest.mark.slow

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "data_parallel_fit.py")


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="keras.distribution needs JAX"
)
def test_data_parallel_matches_one_device():
    done = subprocess.run(
        [sys.executable, SCRIPT], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == 2
    # The weights really live on both devices ...
    assert result["kernel_devices"] == 2
    # ... and each step's loss is the one-device loss: the hardest
    # negatives range over the whole global batch (a loss computed per
    # device, on half batches, would differ), and so are the updates.
    np.testing.assert_allclose(result["parallel"], result["single"], rtol=1e-5)
    assert max(result["weights"]) < 1e-5
