"""Recall metrics and protocols against hand computations and a brute force."""

import numpy as np
import pytest

from scan_keras.evaluation import (
    METRIC_NAMES,
    average_similarities,
    evaluate_protocol,
    i2t_ranks,
    protocol_folds,
    retrieval_metrics,
    t2i_ranks,
)


def brute_force_metrics(sims, cpi):
    """Ranks by sorting each query's scores, one query at a time."""
    n_images, n_captions = sims.shape
    i2t = []
    for i in range(n_images):
        order = sorted(range(n_captions), key=lambda j: -sims[i, j])
        i2t.append(min(order.index(j) for j in range(i * cpi, (i + 1) * cpi)))
    t2i = []
    for j in range(n_captions):
        order = sorted(range(n_images), key=lambda i: -sims[i, j])
        t2i.append(order.index(j // cpi))
    out = {}
    for name, ranks in (("i2t", np.array(i2t)), ("t2i", np.array(t2i))):
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = 100.0 * np.mean(ranks < k)
        out[f"{name}_medr"] = np.floor(np.median(ranks)) + 1
        out[f"{name}_meanr"] = ranks.mean() + 1
    out["rsum"] = sum(out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))
    return out


def test_hand_computed_example():
    # 3 images, 2 captions each: captions 0-1 -> image 0, 2-3 -> 1, 4-5 -> 2.
    sims = np.array(
        [
            [0.9, 0.25, 0.1, 0.35, 0.0, 0.4],  # image 0: caption 0 first -> 0
            [0.5, 0.1, 0.2, 0.3, 0.6, 0.0],  # image 1: best own (3) is 3rd -> 2
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.8],  # image 2: caption 5 first -> 0
        ]
    )
    np.testing.assert_array_equal(i2t_ranks(sims, 2), [0, 2, 0])
    # Caption j's own image is j // 2; rank it within column j.
    np.testing.assert_array_equal(t2i_ranks(sims, 2), [0, 0, 1, 2, 1, 0])
    m = retrieval_metrics(sims, captions_per_image=2)
    assert m["i2t_r1"] == pytest.approx(200 / 3)
    assert m["i2t_r5"] == 100.0 and m["i2t_r10"] == 100.0
    assert m["i2t_medr"] == 1.0  # floor(median([0, 2, 0])) + 1
    assert m["i2t_meanr"] == pytest.approx(2 / 3 + 1)
    assert m["t2i_r1"] == pytest.approx(50.0)
    assert m["t2i_medr"] == 1.0  # floor(median([0, 0, 0, 1, 1, 2])) + 1
    assert m["t2i_meanr"] == pytest.approx(4 / 6 + 1)
    assert m["rsum"] == pytest.approx(200 / 3 + 200 + 50 + 200)
    # A tie with a negative counts against the query.
    sims[2, 3] = 0.3
    assert t2i_ranks(sims, 2)[3] == 2 and i2t_ranks(sims, 2)[1] == 2
    assert set(m) == set(METRIC_NAMES)


def test_matches_brute_force(rng):
    sims = rng.normal(size=(40, 200))
    # Make it easier than chance so recalls are not all near zero.
    for i in range(40):
        sims[i, i * 5 : i * 5 + 5] += rng.uniform(0, 3, size=5)
    ours = retrieval_metrics(sims, 5)
    expected = brute_force_metrics(sims, 5)
    for name in METRIC_NAMES:
        assert ours[name] == pytest.approx(expected[name]), name
    assert 0 < ours["i2t_r1"] < 100


def test_invariant_to_permuting_images_with_their_captions(rng):
    sims = rng.normal(size=(30, 150))
    perm = rng.permutation(30)
    caption_perm = (perm[:, None] * 5 + np.arange(5)).ravel()
    permuted = sims[perm][:, caption_perm]
    assert retrieval_metrics(permuted) == pytest.approx(retrieval_metrics(sims))
    # Shuffling captions among images breaks it.
    broken = sims[:, rng.permutation(150)]
    assert retrieval_metrics(broken) != pytest.approx(retrieval_metrics(sims))


def test_perfect_and_tied_matrices():
    perfect = np.kron(np.eye(4), np.ones((1, 5)))
    m = retrieval_metrics(perfect)
    assert m["rsum"] == 600.0 and m["i2t_medr"] == 1 and m["t2i_meanr"] == 1
    # All scores equal: ties count against the query, so nothing is found.
    tied = retrieval_metrics(np.zeros((20, 100)))
    assert tied["i2t_r10"] == 0.0 and tied["t2i_r10"] == 0.0


def test_blocks_of_rows_agree(rng):
    # More images than one block of rows (256): the blocks must stitch.
    sims = rng.normal(size=(300, 600))
    ranks = i2t_ranks(sims, 2)
    for i in (0, 255, 256, 299):
        order = np.argsort(-sims[i])
        assert ranks[i] == min(np.flatnonzero(np.isin(order, [2 * i, 2 * i + 1])))


def test_protocols(rng):
    sims = rng.normal(size=(50, 250))
    for i in range(50):
        sims[i, 5 * i : 5 * i + 5] += 2.0
    whole = retrieval_metrics(sims)
    calls = []

    def similarity(images, captions):
        calls.append((images, captions))
        return sims[images, captions]

    assert evaluate_protocol(similarity, 50, "5k") == pytest.approx(whole)
    assert evaluate_protocol(similarity, 50, "1k") == pytest.approx(whole)
    calls.clear()
    folds = evaluate_protocol(similarity, 50, "5fold1k")
    assert [c[0] for c in calls] == [slice(10 * k, 10 * k + 10) for k in range(5)]
    assert calls[1][1] == slice(50, 100)
    expected = [retrieval_metrics(sims[s, 5 * s.start : 5 * s.stop]) for s, _ in calls]
    for name in METRIC_NAMES:
        assert folds[name] == pytest.approx(np.mean([e[name] for e in expected]))
    # Within a fold there are fewer distractors: recall can only go up.
    assert folds["i2t_r1"] >= whole["i2t_r1"]


def test_ensemble_averages():
    a, b = np.ones((2, 10)), 3 * np.ones((2, 10))
    np.testing.assert_array_equal(average_similarities(a, b), 2 * np.ones((2, 10)))
    with pytest.raises(ValueError, match="one shape"):
        average_similarities(a, np.ones((2, 5)))


@pytest.mark.parametrize(
    "sims,cpi,message",
    [
        (np.zeros((3, 14)), 5, "need 15 columns"),
        (np.zeros(15), 5, "shape"),
        (np.full((1, 5), np.nan), 5, "NaN"),
        (np.zeros((2, 10)), 0, "captions_per_image"),
    ],
)
def test_bad_input(sims, cpi, message):
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(sims, cpi)


def test_bad_protocol():
    with pytest.raises(ValueError, match="protocol"):
        protocol_folds("10k", 1000)
    with pytest.raises(ValueError, match="5 equal folds"):
        protocol_folds("5fold1k", 1001)
