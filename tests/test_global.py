"""The global-embedding baseline against a float64 NumPy reference."""

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
    reference_caption_encoder,
)
from scan_keras.layers import GlobalSimilarity
from scan_keras.baselines import GlobalEmbedding
from scan_keras.models import SCAN
from scan_keras.presets import get_preset

from test_models import (
    IMG_DIM,
    LENGTHS,
    N_REGIONS,
    TOKENS,
    reference_encodings,
    reference_similarity,
    small_scan,
)


def reference_global(images, captions, image_lengths, caption_lengths):
    """cosine(mean of the real regions, mean of the real words), per pair."""
    out = np.zeros((len(images), len(captions)))
    for i, image in enumerate(np.asarray(images, np.float64)):
        v = image[: image_lengths[i]].mean(axis=0)
        for c, caption in enumerate(np.asarray(captions, np.float64)):
            e = caption[: caption_lengths[c]].mean(axis=0)
            out[i, c] = reference.cosine(v, e)
    return out


@pytest.mark.parametrize("with_image_mask", [False, True])
def test_global_similarity_matches_reference(with_image_mask):
    rng = np.random.default_rng(0)
    images, captions, image_lengths, caption_lengths = random_batch(rng, dim=7)
    if not with_image_mask:
        image_lengths[:] = images.shape[1]
    images_mask = (
        lengths_to_mask(image_lengths, images.shape[1]) if with_image_mask else None
    )
    sims = GlobalSimilarity()(
        images,
        captions,
        images_mask=images_mask,
        captions_mask=lengths_to_mask(caption_lengths, captions.shape[1]),
    )
    want = reference_global(images, captions, image_lengths, caption_lengths)
    np.testing.assert_allclose(ops.convert_to_numpy(sims), want, rtol=1e-5, atol=1e-6)


def test_global_similarity_config_and_errors():
    layer = GlobalSimilarity(eps=1e-6, name="pool")
    assert check_config_round_trip(layer).eps == 1e-6
    with pytest.raises(ValueError, match="eps"):
        GlobalSimilarity(eps=0)
    with pytest.raises(ValueError, match="feature size"):
        GlobalSimilarity()(np.ones((2, 3, 4)), np.ones((2, 3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        GlobalSimilarity()(np.full((2, 3, 4), np.nan), np.ones((2, 3, 4)))


def small_global(**kwargs):
    model = small_scan(GlobalEmbedding, **kwargs)
    randomise(model, np.random.default_rng(1))
    return model


def test_global_embedding_matches_reference():
    model = small_global()
    features = np.random.default_rng(2).normal(size=(4, N_REGIONS, IMG_DIM))
    features = features.astype("float32")
    kernel = ops.convert_to_numpy(model.image_encoder.fc.kernel).astype(np.float64)
    bias = ops.convert_to_numpy(model.image_encoder.fc.bias).astype(np.float64)
    regions = reference.l2norm(np.asarray(features, np.float64) @ kernel + bias, -1)
    words = reference_caption_encoder(model.caption_encoder, TOKENS)
    want = reference_global(
        regions, words, [N_REGIONS] * 4, (TOKENS != 0).sum(axis=1)
    )
    got = model.similarity(features, TOKENS)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The training call scores the same pairs as `similarity`.
    called = model({"features": features, "token_ids": TOKENS[:4]})
    np.testing.assert_allclose(ops.convert_to_numpy(called), got[:, :4], atol=1e-6)


@pytest.mark.slow
def test_global_embedding_trains_saves_and_loads(tmp_path):
    keras.utils.set_random_seed(0)
    features = np.random.default_rng(3).normal(size=(6, N_REGIONS, IMG_DIM)).astype("float32")
    restored = check_trains_saves_and_loads(small_global(embed_size=16), tmp_path, features, TOKENS)
    assert "cross_attn" not in restored.get_config()


def test_global_embedding_from_preset_keeps_the_recipe_not_the_attention():
    model = GlobalEmbedding.from_preset(
        "f30k_i2t_lse", vocab_size=30, embed_size=8, word_dim=4, img_dim=6
    )
    preset = get_preset("f30k_i2t_lse")
    assert model.name == "global_f30k_i2t_lse"
    assert model.contrastive_loss.margin == preset.margin
    assert isinstance(model.attention, GlobalSimilarity)
    scan = SCAN.from_preset("f30k_i2t_lse", vocab_size=30, embed_size=8, word_dim=4, img_dim=6)
    assert scan.name == "scan_f30k_i2t_lse"
    assert scan.attention.cross_attn == "i2t"


def test_the_global_head_adds_its_hinge_loss_in_training(rng):
    # SCAN(global_loss_weight=w): loss = hinge(attention) + w hinge(global).
    model = small_scan(margin=0.3, global_loss_weight=0.5)
    randomise(model, rng)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    features = rng.normal(size=(6, N_REGIONS, IMG_DIM)).astype("float32")
    regions, words = reference_encodings(model, features, TOKENS)
    pooled = reference_global(regions, words, [N_REGIONS] * 6, LENGTHS)
    expected = reference.contrastive_loss(
        reference_similarity(model, features, TOKENS), margin=0.3
    ) + 0.5 * reference.contrastive_loss(pooled, margin=0.3)
    batch = {"features": features, "token_ids": TOKENS}
    loss = model.train_on_batch(batch)
    np.testing.assert_allclose(loss, expected, rtol=1e-4)
    # Outside training the model scores and validates as SCAN does.
    plain = small_scan(margin=0.3)
    plain.set_weights(model.get_weights())
    plain.compile(optimizer="adam")
    np.testing.assert_allclose(
        model.evaluate(batch, batch_size=6, verbose=0),
        plain.evaluate(batch, batch_size=6, verbose=0), rtol=1e-6,
    )
    assert check_config_round_trip(model).global_loss_weight == 0.5
    with pytest.raises(ValueError, match="global_loss_weight"):
        small_scan(global_loss_weight=-1)
