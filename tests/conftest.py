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


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"
