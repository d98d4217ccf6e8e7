"""The Sum-Max baseline (the paper's Table 3) against a float64 NumPy reference."""

import keras
import numpy as np
import pytest
from keras import ops

import reference
from helpers import (
    check_config_round_trip,
    check_trains_saves_and_loads,
    lengths_to_mask,
    random_batch,
    randomise,
)
from scan_keras.baselines import GlobalEmbedding, SumMax
from scan_keras.layers import SumMaxSimilarity
from scan_keras.models import SCAN

from test_models import IMG_DIM, N_REGIONS, TOKENS, reference_encodings, small_scan


def reference_sum_max(images, captions, image_lengths, caption_lengths, cross_attn):
    """Written from the paper's words: t-i sums, over the real words, the
    largest cosine with a real region; i-t sums, over the real regions, the
    largest cosine with a real word."""
    out = np.zeros((len(images), len(captions)))
    for i, image in enumerate(np.asarray(images, np.float64)):
        for c, caption in enumerate(np.asarray(captions, np.float64)):
            cos = np.array(
                [
                    [reference.cosine(v, e) for e in caption[: caption_lengths[c]]]
                    for v in image[: image_lengths[i]]
                ]
            )  # (regions, words)
            out[i, c] = (
                cos.max(axis=0).sum() if cross_attn == "t2i" else cos.max(axis=1).sum()
            )
    return out


@pytest.mark.parametrize("cross_attn", ["t2i", "i2t"])
@pytest.mark.parametrize("with_image_mask", [False, True])
def test_sum_max_similarity_matches_reference(cross_attn, with_image_mask):
    rng = np.random.default_rng(0)
    images, captions, image_lengths, caption_lengths = random_batch(rng, dim=7)
    if not with_image_mask:
        image_lengths[:] = images.shape[1]
    images_mask = (
        lengths_to_mask(image_lengths, images.shape[1]) if with_image_mask else None
    )
    sims = SumMaxSimilarity(cross_attn)(
        images,
        captions,
        images_mask=images_mask,
        captions_mask=lengths_to_mask(caption_lengths, captions.shape[1]),
    )
    want = reference_sum_max(images, captions, image_lengths, caption_lengths, cross_attn)
    np.testing.assert_allclose(ops.convert_to_numpy(sims), want, rtol=1e-5, atol=1e-5)


def test_sum_max_similarity_config_and_errors():
    layer = SumMaxSimilarity("i2t", eps=1e-6, name="sm")
    restored = check_config_round_trip(layer)
    assert (restored.cross_attn, restored.eps) == ("i2t", 1e-6)
    with pytest.raises(ValueError, match="cross_attn"):
        SumMaxSimilarity("both")
    with pytest.raises(ValueError, match="eps"):
        SumMaxSimilarity(eps=0)
    with pytest.raises(ValueError, match="feature size"):
        SumMaxSimilarity()(np.ones((2, 3, 4)), np.ones((2, 3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        SumMaxSimilarity()(np.ones((2, 3, 4)), np.full((2, 3, 4), np.nan))


def small_sum_max(**kwargs):
    model = small_scan(SumMax, **kwargs)
    randomise(model, np.random.default_rng(1))
    return model


@pytest.mark.parametrize("cross_attn", ["t2i", "i2t"])
def test_sum_max_model_matches_reference(cross_attn):
    model = small_sum_max(cross_attn=cross_attn)
    features = np.random.default_rng(2).normal(size=(4, N_REGIONS, IMG_DIM))
    features = features.astype("float32")
    regions, words = reference_encodings(model, features, TOKENS)
    want = reference_sum_max(
        regions, words, [N_REGIONS] * 4, (TOKENS != 0).sum(axis=1), cross_attn
    )
    np.testing.assert_allclose(
        model.similarity(features, TOKENS), want, rtol=1e-5, atol=1e-5
    )


@pytest.mark.slow
def test_sum_max_trains_saves_and_loads(tmp_path):
    keras.utils.set_random_seed(0)
    features = np.random.default_rng(3).normal(size=(6, N_REGIONS, IMG_DIM)).astype("float32")
    model = small_sum_max(embed_size=16, cross_attn="i2t")
    restored = check_trains_saves_and_loads(model, tmp_path, features, TOKENS)
    assert restored.similarity_layer.cross_attn == "i2t"


def test_baselines_from_preset_take_no_attention_options():
    model = SumMax.from_preset(
        "f30k_i2t_lse", vocab_size=30, embed_size=8, word_dim=4, img_dim=6
    )
    assert model.name == "sum_max_f30k_i2t_lse"
    assert isinstance(model.attention, SumMaxSimilarity)
    assert model.attention.cross_attn == "i2t"
    for baseline in (SumMax, GlobalEmbedding):
        with pytest.raises(ValueError, match="no attention.*lambda_softmax"):
            baseline(vocab_size=5, lambda_softmax=4.0)
    # no_imgnorm, a field of the presets, reaches the image encoder.
    scan = SCAN.from_preset("f30k_t2i_avg", vocab_size=5, img_dim=6, no_imgnorm=True)
    assert scan.image_encoder.no_imgnorm
