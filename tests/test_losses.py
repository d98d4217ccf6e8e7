"""ContrastiveLoss against the reference hinge loss (VSE++ / SCAN Eq. 9)."""

import numpy as np
import pytest
from keras import ops

import reference
from helpers import check_config_round_trip, input_gradients
from scan_keras.losses import ContrastiveLoss


@pytest.mark.parametrize("max_violation", [True, False])
@pytest.mark.parametrize("margin", [0.2, 0.5])
def test_matches_reference(rng, max_violation, margin):
    sims = rng.uniform(-1, 1, size=(6, 6)).astype("float32")
    loss = ContrastiveLoss(margin=margin, max_violation=max_violation)
    expected = reference.contrastive_loss(sims, margin, max_violation)
    assert expected > 0
    assert float(loss(None, sims)) == pytest.approx(expected, rel=1e-6)


def test_hand_computed_example():
    sims = np.array([[0.9, 0.1], [0.8, 0.5]], "float32")
    # Row 1: 0.2 + 0.8 - 0.5 = 0.5; column 0: 0.2 + 0.8 - 0.9 = 0.1.
    assert float(ContrastiveLoss()(None, sims)) == pytest.approx(0.6)
    assert float(ContrastiveLoss(max_violation=False)(None, sims)) == pytest.approx(0.6)


def test_zero_when_positives_beat_negatives_by_the_margin(rng):
    sims = rng.uniform(-0.5, 0.3, size=(5, 5)).astype("float32")
    sims[1, 3] = 0.3
    np.fill_diagonal(sims, 0.3 + 0.2 + 1e-3)
    for max_violation in (True, False):
        assert float(ContrastiveLoss(max_violation=max_violation)(None, sims)) == 0
    np.fill_diagonal(sims, 0.3 + 0.2 - 1e-2)
    assert float(ContrastiveLoss()(None, sims)) > 0


def test_hardest_negative_gradient_touches_only_the_hardest(rng):
    sims = rng.uniform(-1, 1, size=(5, 5)).astype("float32")
    np.fill_diagonal(sims, 0.1)
    (grad,) = input_gradients(lambda s: ContrastiveLoss()(None, s), sims)
    # Written out: each violating row (column) pushes its hardest negative
    # up by one and its positive down by one; nothing else moves.
    expected = np.zeros((5, 5))
    negatives = np.where(np.eye(5, dtype=bool), -np.inf, sims)
    for i in range(5):
        c = np.argmax(negatives[i])
        if 0.2 + sims[i, c] - sims[i, i] > 0:
            expected[i, c] += 1
            expected[i, i] -= 1
    for c in range(5):
        i = np.argmax(negatives[:, c])
        if 0.2 + sims[i, c] - sims[c, c] > 0:
            expected[i, c] += 1
            expected[c, c] -= 1
    assert np.count_nonzero(expected) > 2
    np.testing.assert_array_equal(grad, expected)


def test_y_true_is_ignored(rng):
    sims = rng.uniform(-1, 1, size=(3, 3)).astype("float32")
    loss = ContrastiveLoss()
    assert float(loss(np.ones(3), sims)) == float(loss(None, sims))


def test_config_round_trip():
    clone = check_config_round_trip(ContrastiveLoss(margin=0.1, max_violation=False))
    assert clone.margin == 0.1 and clone.max_violation is False


def test_bad_input_raises():
    with pytest.raises(ValueError, match="square"):
        ContrastiveLoss()(None, np.zeros((3, 4), "float32"))
    with pytest.raises(ValueError, match="rank 2"):
        ContrastiveLoss()(None, np.zeros((3,), "float32"))
    with pytest.raises(ValueError, match="margin"):
        ContrastiveLoss(margin=-0.1)
