"""What notebooks 4 and 5 state, checked without running them.

The notebooks check their numbers as they run (pytest --nbval); these tests
cover what holds of their files and of the stored results they read.
"""

import json
import os

import pytest

from scan_keras.ablations import VARIANTS, read_table
from scan_keras.chance import chance_metrics
from scan_keras.demo import DEMO_PRESET

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


def test_the_ablation_table_has_every_variant_over_five_seeds():
    # Notebook 5 reads conclusions from this table only over seeds.
    rows = read_table(os.path.join(RESULTS, "ablations_seeds.csv"))
    seeds = {int(r["seed"]) for r in rows}
    assert len(seeds) >= 5
    assert len(rows) == len(VARIANTS) * len(seeds)
    assert {(r["variant"], int(r["seed"])) for r in rows} == {
        (v.name, s) for v in VARIANTS for s in seeds
    }
    with open(os.path.join(RESULTS, "ablations_seeds.json")) as f:
        record = json.load(f)
    assert set(record["minutes_per_seed"]) == {str(s) for s in seeds}
    assert record["command"].startswith(f"KERAS_BACKEND={record['backend']} ")
    assert all(getattr(DEMO_PRESET, k) == v for k, v in record["base_preset"].items())


def test_the_chance_levels_notebook_4_states():
    # Notebook 4: R@1 at chance is 1/n in both directions (five relevant
    # captions among five times as many candidates).
    for n in (100, 200, 1000):
        chance = chance_metrics(n, 5)
        assert chance["i2t_r1"] == pytest.approx(100 / n)
        assert chance["t2i_r1"] == pytest.approx(100 / n)
    assert chance_metrics(100)["rsum"] == pytest.approx(31.6, abs=0.05)
    assert chance_metrics(200)["rsum"] == pytest.approx(15.9, abs=0.05)
