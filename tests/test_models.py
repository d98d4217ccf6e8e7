"""The SCAN model against the paper's equations written out in float64 NumPy."""

import os

import keras
import numpy as np
import pytest
from keras import ops

import reference
from helpers import randomise, reference_caption_encoder
from scan_keras.data import Vocabulary
from scan_keras.models import SCAN
from scan_keras.presets import get_preset

IMG_DIM, N_REGIONS = 12, 5
# Varied lengths (1 to 7 tokens) and junk-free padding: 0 is <pad>.
TOKENS = np.array(
    [
        [1, 4, 9, 5, 2, 0, 0],
        [1, 7, 2, 0, 0, 0, 0],
        [1, 3, 3, 8, 6, 11, 2],
        [1, 2, 0, 0, 0, 0, 0],
        [4, 0, 0, 0, 0, 0, 0],
        [1, 10, 9, 8, 7, 2, 0],
    ],
    dtype="int32",
)
LENGTHS = (TOKENS != 0).sum(axis=1)


def small_scan(model_class=SCAN, **kwargs):
    """A small built model: `SCAN` or a model without attention."""
    config = dict(vocab_size=12, img_dim=IMG_DIM, embed_size=6, word_dim=5)
    config.update(kwargs)
    model = model_class(**config)
    model.build()
    return model


def reference_encodings(model, features, token_ids):
    """The model's region and word vectors in float64."""
    kernel = ops.convert_to_numpy(model.image_encoder.fc.kernel).astype(np.float64)
    bias = ops.convert_to_numpy(model.image_encoder.fc.bias).astype(np.float64)
    regions = np.asarray(features, np.float64) @ kernel + bias
    if not model.image_encoder.no_imgnorm:
        regions = reference.l2norm(regions, -1)
    return regions, reference_caption_encoder(model.caption_encoder, token_ids)


def reference_similarity(model, features, token_ids):
    """The whole model in float64: encoders, then the per-pair attention."""
    regions, words = reference_encodings(model, features, token_ids)
    attention = model.attention
    return reference.similarity_matrix(
        regions,
        words,
        [features.shape[1]] * len(features),
        (token_ids != 0).sum(axis=1),
        cross_attn=attention.cross_attn,
        lambda_softmax=attention.lambda_softmax,
        agg_func=attention.agg_func,
        lambda_lse=attention.lambda_lse,
    )


@pytest.mark.parametrize(
    "options",
    [
        dict(cross_attn="t2i", agg_func="mean", lambda_softmax=9.0),
        dict(cross_attn="t2i", agg_func="logsumexp", lambda_lse=6.0),
        dict(cross_attn="i2t", agg_func="mean", lambda_softmax=4.0),
        dict(cross_attn="i2t", agg_func="logsumexp", lambda_lse=20.0),
    ],
)
def test_similarity_matches_reference(rng, options):
    model = small_scan(**options)
    randomise(model, rng)
    features = rng.normal(size=(4, N_REGIONS, IMG_DIM)).astype("float32")
    expected = reference_similarity(model, features, TOKENS)

    called = ops.convert_to_numpy(
        model({"features": features, "token_ids": TOKENS})
    )
    np.testing.assert_allclose(called, expected, rtol=1e-5, atol=1e-6)
    # The evaluation path: images in batches of 3, captions sorted by
    # length and scored 4 at a time; columns must come back in order.
    chunked = model.similarity(
        features, TOKENS, batch_size=3, caption_batch_size=4, verbose=0
    )
    assert isinstance(chunked, np.ndarray) and chunked.shape == (4, 6)
    np.testing.assert_allclose(chunked, expected, rtol=1e-5, atol=1e-6)


def test_torch_compile_reaches_the_attention(rng):
    # On PyTorch the attention's chunks are compiled; the matrix stays the
    # float64 reference's. Other backends ignore the option.
    model = small_scan(embed_size=32, torch_compile=True)
    randomise(model, rng)
    assert model.attention.torch_compile
    # An execution choice: made where the model runs, never saved.
    assert not SCAN.from_config(model.get_config()).attention.torch_compile
    features = rng.normal(size=(4, N_REGIONS, IMG_DIM)).astype("float32")
    expected = reference_similarity(model, features, TOKENS)
    sims = model.similarity(features, TOKENS, verbose=0)
    np.testing.assert_allclose(sims, expected, rtol=1e-5, atol=1e-6)


def test_bfloat16_product_reaches_the_attention(rng):
    model = small_scan(embed_size=32, product_dtype="bfloat16")
    randomise(model, rng)
    assert model.attention.product_dtype == "bfloat16"
    assert SCAN.from_config(model.get_config()).attention.product_dtype == "bfloat16"
    features = rng.normal(size=(4, N_REGIONS, IMG_DIM)).astype("float32")
    expected = reference_similarity(model, features, TOKENS)
    sims = model.similarity(features, TOKENS, verbose=0)
    error = np.abs(sims - expected).max() / np.abs(expected).max()
    # Rounded operands: not float32-exact, but close (the 3e-3 bound at
    # d = 1024 is tests/test_attention.py's; d = 32 averages less).
    assert 1e-6 < error < 1e-2, error


def test_similarity_follows_new_attention_options(rng):
    # On JAX and TensorFlow `similarity` is compiled once and cached: a
    # changed option of the attention must not be served the old program.
    model = small_scan()
    randomise(model, rng)
    features = rng.normal(size=(4, N_REGIONS, IMG_DIM)).astype("float32")
    before = model.similarity(features, TOKENS, verbose=0)
    model.attention.lambda_softmax = 1.0
    model.attention.agg_func = "logsumexp"
    after = model.similarity(features, TOKENS, verbose=0)
    expected = reference_similarity(model, features, TOKENS)
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-6)


def test_loss_is_the_hinge_loss_of_the_batch(rng):
    model = small_scan(margin=0.3)
    randomise(model, rng)
    model.compile(optimizer="adam")
    features = rng.normal(size=(6, N_REGIONS, IMG_DIM)).astype("float32")
    sims = reference_similarity(model, features, TOKENS)
    loss = model.evaluate(
        {"features": features, "token_ids": TOKENS}, batch_size=6, verbose=0
    )
    np.testing.assert_allclose(
        loss, reference.contrastive_loss(sims, margin=0.3), rtol=1e-4
    )
    summed = small_scan(margin=0.3, max_violation=False)
    summed.set_weights(model.get_weights())
    summed.compile(optimizer="adam")
    loss = summed.evaluate(
        {"features": features, "token_ids": TOKENS}, batch_size=6, verbose=0
    )
    np.testing.assert_allclose(
        loss, reference.contrastive_loss(sims, 0.3, max_violation=False), rtol=1e-4
    )


@pytest.mark.slow
def test_fit_lowers_the_loss(rng):
    model = small_scan(embed_size=16)
    model.compile(optimizer=keras.optimizers.Adam(1e-2, global_clipnorm=2.0))
    batch = {
        "features": rng.normal(size=(6, N_REGIONS, IMG_DIM)).astype("float32"),
        "token_ids": TOKENS,
    }
    before = model.evaluate(batch, batch_size=6, verbose=0)
    history = model.fit(batch, batch_size=6, epochs=25, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < 0.5 * before


def test_encoders_give_vectors_and_mask(rng):
    model = small_scan()
    features = rng.normal(size=(2, N_REGIONS, IMG_DIM)).astype("float32")
    regions = ops.convert_to_numpy(model.encode_images(features))
    assert regions.shape == (2, N_REGIONS, 6)
    np.testing.assert_allclose(np.linalg.norm(regions, axis=-1), 1.0, rtol=1e-5)
    words, mask = model.encode_captions(TOKENS)
    words, mask = ops.convert_to_numpy(words), ops.convert_to_numpy(mask)
    np.testing.assert_array_equal(mask, TOKENS != 0)
    np.testing.assert_allclose(
        np.linalg.norm(words, axis=-1), (TOKENS != 0).astype(float), atol=1e-5
    )


def test_from_preset_uses_the_papers_settings():
    model = SCAN.from_preset("coco_i2t_lse", vocab_size=30, embed_size=8, word_dim=4)
    preset = get_preset("coco_i2t_lse")
    assert model.attention.cross_attn == "i2t"
    assert model.attention.lambda_softmax == preset.lambda_softmax == 4.0
    assert model.attention.lambda_lse == 20.0
    assert model.attention.agg_func == "logsumexp"
    assert model.contrastive_loss.margin == 0.2
    assert model.contrastive_loss.max_violation
    assert model.caption_encoder.bidirectional
    assert model.caption_encoder.embed_size == 8  # the override
    assert model.img_dim == 2048
    assert model.name == "scan_coco_i2t_lse"


def test_save_and_load_keep_weights_and_vocabulary(rng, tmp_path):
    words = ["<pad>", "<start>", "<end>", "<unk>"] + [f"w{k}" for k in range(8)]
    model = small_scan(vocab_size=None, vocabulary=Vocabulary(words), cross_attn="i2t")
    randomise(model, rng)
    features = rng.normal(size=(3, N_REGIONS, IMG_DIM)).astype("float32")
    expected = model.similarity(features, TOKENS, verbose=0)
    path = os.path.join(str(tmp_path), "scan.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, SCAN)
    assert restored.vocabulary.words == words
    assert restored.get_config() == model.get_config()
    np.testing.assert_allclose(
        restored.similarity(features, TOKENS, verbose=0), expected, rtol=1e-6
    )


def test_config_round_trip():
    model = small_scan(
        num_layers=2, bidirectional=False, no_imgnorm=True, raw_feature_norm="softmax"
    )
    clone = SCAN.from_config(model.get_config())
    assert clone.get_config() == model.get_config()


def test_bad_inputs_raise(rng):
    model = small_scan()
    features = rng.normal(size=(2, N_REGIONS, IMG_DIM)).astype("float32")
    with pytest.raises(ValueError, match="Missing"):
        model({"features": features})
    with pytest.raises(ValueError, match="features"):
        model.encode_images(features[0])
    with pytest.raises(ValueError, match="Caption 1 is empty"):
        model.similarity(features, np.array([[1, 2], [0, 0]]), verbose=0)
    with pytest.raises(ValueError, match="vocab_size"):
        SCAN(vocab_size=5, vocabulary=["<pad>", "<start>", "<end>", "<unk>"])
    with pytest.raises(ValueError, match="vocab_size"):
        SCAN()
    with pytest.raises(ValueError, match="cross_attn"):
        SCAN(vocab_size=5, cross_attn="both")


def test_similarity_follows_new_weights_and_refuses_nan(rng):
    # On JAX `similarity` is compiled with the weights as inputs: after
    # the weights change, it must score with the new ones.
    model = small_scan()
    features = rng.normal(size=(4, N_REGIONS, IMG_DIM)).astype("float32")
    before = model.similarity(features, TOKENS, verbose=0)
    randomise(model, rng)
    after = model.similarity(features, TOKENS, verbose=0)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(
        after, reference_similarity(model, features, TOKENS), rtol=1e-5, atol=1e-6
    )
    features[2, 1, 0] = np.nan
    with pytest.raises(ValueError, match="images 0-3 contain NaN"):
        model.similarity(features, TOKENS, verbose=0)


def test_similarity_of_an_unbuilt_model_leaves_its_weights_readable(rng):
    # Compiled (JAX), a model built inside the trace kept traced values
    # in its new variables, and `get_weights` then failed.
    model = SCAN(vocab_size=12, img_dim=IMG_DIM, embed_size=16, word_dim=8)
    features = rng.normal(size=(4, N_REGIONS, IMG_DIM)).astype("float32")
    sims = model.similarity(features, TOKENS, verbose=0)
    weights = model.get_weights()
    assert len(weights) == len(model.weights) and all(np.all(np.isfinite(w)) for w in weights)
    np.testing.assert_allclose(
        sims, reference_similarity(model, features, TOKENS), rtol=1e-5, atol=1e-6
    )


def test_warmup_sums_the_hinge_then_takes_the_hardest_negatives(rng):
    """With a zero learning rate the weights stay put, so each epoch's loss
    is the loss of the same scores: the summed hinge during the warm-up,
    then the hardest negatives; the compiled step follows the switch."""
    from scan_keras.callbacks import HardestNegativeWarmup

    model = small_scan(margin=0.3)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    features = rng.normal(size=(6, N_REGIONS, IMG_DIM)).astype("float32")
    sims = reference_similarity(model, features, TOKENS)
    seen = []
    spy = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(model.contrastive_loss.max_violation)
    )
    history = model.fit(
        {"features": features, "token_ids": TOKENS}, batch_size=6, epochs=4, verbose=0,
        callbacks=[HardestNegativeWarmup(2), spy],
    )
    summed = reference.contrastive_loss(sims, 0.3, max_violation=False)
    hardest = reference.contrastive_loss(sims, 0.3, max_violation=True)
    np.testing.assert_allclose(history.history["loss"], [summed, summed, hardest, hardest], rtol=1e-4)
    # Between epochs (when a model is saved) the loss is the configured one.
    assert seen == [True] * 4
    with pytest.raises(ValueError, match="epochs"):
        HardestNegativeWarmup(-1)
