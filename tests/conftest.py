"""Shared fixtures. The suite runs once per backend, chosen by KERAS_BACKEND."""

import os
import sys

import keras
import numpy as np
import pytest

# Make the test helpers (reference.py, helpers.py) importable as modules.
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# Tests marked `once` check what does not depend on the Keras backend (file
# formats, the command line's plumbing, scripts, stored results, the site).
# When the suite runs on several backends, scripts/test.sh names one of them
# in SCAN_KERAS_ONCE_ON and the others leave these tests out; a run on one
# backend alone runs them all.
ONCE_ON = os.environ.get("SCAN_KERAS_ONCE_ON")


def pytest_collection_modifyitems(config, items):
    if not ONCE_ON or ONCE_ON == keras.backend.backend():
        return
    once = [item for item in items if item.get_closest_marker("once")]
    if once:
        config.hook.pytest_deselected(items=once)
        items[:] = [item for item in items if not item.get_closest_marker("once")]


def pytest_report_header(config):
    header = f"keras {keras.__version__}, backend {keras.backend.backend()}"
    if ONCE_ON and ONCE_ON != keras.backend.backend():
        header += f"; the tests marked `once` run in the {ONCE_ON} run"
    return header
