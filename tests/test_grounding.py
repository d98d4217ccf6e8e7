"""Grounding: each word's attention over its own image's regions."""

import numpy as np
import pytest
from keras import ops

import reference
from helpers import randomise, reference_caption_encoder
from scan_keras.data import Vocabulary, load_split, write_split
from scan_keras.evaluation import (
    grounding_accuracy,
    grounding_scores,
    word_region_attention,
)
from scan_keras.baselines import GlobalEmbedding
from scan_keras.models import SCAN

from test_models import IMG_DIM, N_REGIONS, TOKENS


def encoded(model, features, token_ids):
    """Region and word vectors in float64, written out."""
    kernel = ops.convert_to_numpy(model.image_encoder.fc.kernel).astype(np.float64)
    bias = ops.convert_to_numpy(model.image_encoder.fc.bias).astype(np.float64)
    regions = reference.l2norm(np.asarray(features, np.float64) @ kernel + bias, -1)
    return regions, reference_caption_encoder(model.caption_encoder, token_ids)


@pytest.mark.parametrize(
    "model_class, options, lambda_softmax",
    [
        (SCAN, dict(cross_attn="t2i", lambda_softmax=5.0), 5.0),
        # Models without a t2i attention are read with the paper's t2i one.
        (SCAN, dict(cross_attn="i2t", lambda_softmax=4.0), 9.0),
        (GlobalEmbedding, {}, 9.0),
    ],
)
def test_word_region_attention_matches_the_paper(model_class, options, lambda_softmax):
    model = model_class(vocab_size=12, img_dim=IMG_DIM, embed_size=6, word_dim=5, **options)
    model.build()
    randomise(model, np.random.default_rng(0))
    features = np.random.default_rng(1).normal(size=(len(TOKENS), N_REGIONS, IMG_DIM))
    got = word_region_attention(model, features.astype("float32"), TOKENS, batch_size=4)
    assert got.shape == TOKENS.shape + (N_REGIONS,)
    regions, words = encoded(model, features, TOKENS)
    for k, ids in enumerate(TOKENS):
        n = int(np.sum(ids != 0))
        _, alpha = reference.pair_score(
            regions[k], words[k, :n], "t2i", lambda_softmax, "mean", 6.0
        )
        np.testing.assert_allclose(got[k, :n], alpha, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(got[k, n:], 0.0)


def test_grounding_scores_by_hand():
    # Two captions over 4 regions; rows: <start>, words..., <end>.
    attention = np.zeros((2, 5, 4))
    attention[:, :, 0] = 1.0  # <start>, <end> and unused words: region 0
    attention[0, 1] = [0.1, 0.6, 0.2, 0.1]  # word 0 -> region 1: hit, 0.6
    attention[0, 2] = [0.5, 0.1, 0.3, 0.1]  # word 1 -> regions 2, 3: miss, 0.4
    attention[1, 1] = [0.0, 0.0, 0.3, 0.7]  # word 0 -> region 3: hit, 0.7
    attention[1, 4] = 0.0  # caption 1 has 2 words: position 4 is padding
    groundings = [[(0, (1,)), (1, (2, 3))], [(0, (3,))]]
    scores = grounding_scores(attention, groundings)
    assert scores["n_words"] == 3
    assert scores["accuracy"] == pytest.approx(100 * 2 / 3)
    assert scores["attention_mass"] == pytest.approx(100 * (0.6 + 0.4 + 0.7) / 3)
    assert scores["chance"] == pytest.approx(100 * (1 / 4 + 2 / 4 + 1 / 4) / 3)

    with pytest.raises(ValueError, match="one grounding list per caption"):
        grounding_scores(attention, groundings[:1])
    with pytest.raises(ValueError, match="word index 2 is outside its 2 words"):
        grounding_scores(attention, [[(0, (1,))], [(2, (1,))]])
    with pytest.raises(ValueError, match=r"region indices in \[0, 4\)"):
        grounding_scores(attention, [[(0, (4,))], []])
    with pytest.raises(ValueError, match="No grounded word"):
        grounding_scores(attention, [[], []])


def test_grounding_accuracy_pairs_each_caption_with_its_image(tmp_path):
    rng = np.random.default_rng(2)
    words = ["red", "blue", "circle", "square", "and"]
    captions = [
        " ".join(rng.choice(words, size=rng.integers(1, 5))) for _ in range(20)
    ]
    features = rng.normal(size=(4, N_REGIONS, IMG_DIM)).astype("float32")
    write_split(str(tmp_path), "test", features, captions)
    split = load_split(str(tmp_path), "test")
    vocabulary = Vocabulary.build(captions, min_count=1)
    model = SCAN(vocabulary=vocabulary, img_dim=IMG_DIM, embed_size=6, word_dim=5)
    model.build()
    randomise(model, rng)
    groundings = [[(0, (c % N_REGIONS,))] for c in range(20)]

    scores = grounding_accuracy(model, split, groundings, batch_size=3)
    token_ids = vocabulary.encode_batch(captions)
    attention = word_region_attention(model, features[np.arange(20) // 5], token_ids)
    assert scores == pytest.approx(grounding_scores(attention, groundings))

    with pytest.raises(ValueError, match="one grounding list per caption"):
        grounding_accuracy(model, split, groundings[:-1])
