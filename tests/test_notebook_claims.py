"""What notebooks 4 and 5 state, checked without running them.

The notebooks check their numbers as they run (pytest --nbval); these tests
cover what holds of their files and of the stored results they read.
"""

import json
import os

import pytest

from scan_keras.ablations import COLUMNS, read_table
from scan_keras.chance import chance_metrics

# Independent of the Keras backend (see conftest.py).
pytestmark = pytest.mark.once

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ("04_training_on_the_world.ipynb", "05_ablations.ipynb", "07_search_at_scale.ipynb")
RESULTS = os.path.join(ROOT, "notebooks", "results")


def _cells(name):
    with open(os.path.join(ROOT, "notebooks", name), encoding="utf-8") as f:
        return json.load(f)["cells"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_ignored_outputs_are_tagged_not_commented(name):
    # The site shows a cell's source: a marker comment would show with it.
    for cell in _cells(name):
        source = "".join(cell["source"])
        assert "NBVAL_IGNORE_OUTPUT" not in source
        if cell["cell_type"] == "code" and "nbval-ignore-output" in cell["metadata"].get("tags", []):
            assert cell["outputs"], "an ignored cell still shows what it printed"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_global_baseline_is_not_called_vsepp(name):
    # VSE++ used a CNN image vector and a GRU's last state; the baseline
    # here pools SCAN's encoders. VSE++ is named only as the paper's model
    # and as the origin of the hardest-negative rule.
    for cell in _cells(name):
        source = "".join(cell["source"])
        assert "global (VSE++)" not in source
        assert "(VSE++)" not in source


def test_the_earlier_ablation_table_is_the_same_experiment():
    # Notebook 5 measures the noise of one run as the largest move between
    # two makings of the table that differ only in float rounding.
    now = read_table(os.path.join(RESULTS, "ablations.csv"))
    before = read_table(os.path.join(RESULTS, "ablations_before_leaky_clip.csv"))
    assert [r["variant"] for r in now] == [r["variant"] for r in before]
    with open(os.path.join(RESULTS, "ablations.json")) as f:
        record = json.load(f)
    with open(os.path.join(RESULTS, "ablations_before_leaky_clip.json")) as f:
        earlier = json.load(f)
    for key in ("command", "seed", "base_preset", "world", "backend"):
        assert record[key] == earlier[key], key
    assert set(now[0]) == set(COLUMNS)


def test_the_chance_levels_notebook_4_states():
    # Notebook 4: R@1 at chance is 1/n in both directions (five relevant
    # captions among five times as many candidates).
    for n in (100, 200, 1000):
        chance = chance_metrics(n, 5)
        assert chance["i2t_r1"] == pytest.approx(100 / n)
        assert chance["t2i_r1"] == pytest.approx(100 / n)
    assert chance_metrics(100)["rsum"] == pytest.approx(31.6, abs=0.05)
    assert chance_metrics(200)["rsum"] == pytest.approx(15.9, abs=0.05)
