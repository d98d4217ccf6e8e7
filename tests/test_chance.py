"""Chance levels in closed form against random rankings."""

import itertools
import re

import numpy as np
import pytest

import scan_keras.chance
from scan_keras.chance import chance_metrics, chance_recall
from scan_keras.evaluation import retrieval_metrics

# Independent of the Keras backend (see conftest.py).
pytestmark = pytest.mark.once


def test_chance_recall_counts_every_order():
    """All orders of 6 items, 2 of them relevant: the share whose first k
    hold a relevant one."""
    for k in range(1, 7):
        orders = list(itertools.permutations(range(6)))
        hits = sum(any(item < 2 for item in order[:k]) for order in orders)
        assert chance_recall(6, 2, k) == pytest.approx(hits / len(orders), abs=1e-12)


def test_chance_metrics_match_random_scores():
    """The mean of `retrieval_metrics` over many random score matrices,
    within four standard errors of the closed form."""
    rng = np.random.default_rng(0)
    n_images, trials = 20, 3000
    runs = [retrieval_metrics(rng.random((n_images, 5 * n_images))) for _ in range(trials)]
    expected = chance_metrics(n_images)
    for key in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum",
                "i2t_meanr", "t2i_meanr"):
        values = np.array([run[key] for run in runs])
        error = values.std(ddof=1) / np.sqrt(trials)
        assert abs(values.mean() - expected[key]) < 4 * error + 1e-9, key
    # The median over the queries of one run scatters about the median of
    # the rank's distribution.
    for key in ("i2t_medr", "t2i_medr"):
        values = np.array([run[key] for run in runs])
        assert abs(np.median(values) - expected[key]) <= 1.0, key


def test_the_figures_of_the_docstring():
    doc = scan_keras.chance.__doc__
    at_100 = chance_metrics(100)
    stated = re.search(r"R@10 of\s+([\d.]+)%, ([\d.]+)% and ([\d.]+)%", doc).groups()
    assert [float(x) for x in stated] == [
        round(at_100[k], 1) for k in ("i2t_r1", "i2t_r5", "i2t_r10")
    ]
    assert f"rsum about {at_100['rsum']:.1f}" in doc
    assert f"about {chance_metrics(1000)['rsum']:.1f}" in doc
    assert f"# {np.floor(at_100['rsum'] * 100) / 100:.2f}..." in doc


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="n_images"):
        chance_metrics(0)
    with pytest.raises(ValueError, match="n_relevant"):
        chance_recall(3, 4, 1)
    assert chance_recall(10, 2, 50) == 1.0
