"""RegionEncoder and CaptionEncoder against NumPy computations of the paper."""

import math

import keras
import numpy as np
import pytest
from keras import ops

import reference
from helpers import (
    check_config_round_trip,
    check_save_load,
    get_keras_mask,
    randomise,
    reference_caption_encoder,
)
from scan_keras.layers import CaptionEncoder, RegionEncoder, StackedCrossAttention

TOKENS = np.array(
    [
        [1, 4, 9, 5, 2, 0, 0],
        [1, 7, 2, 0, 0, 0, 0],
        [1, 3, 3, 8, 6, 11, 2],
        [1, 2, 0, 0, 0, 0, 0],
    ],
    dtype="int32",
)
LENGTHS = (TOKENS != 0).sum(axis=1)


# ---------------------------------------------------------------- regions


def test_region_encoder_values(rng):
    features = rng.normal(size=(3, 5, 12)).astype("float32")
    encoder = RegionEncoder(embed_size=6)
    regions = ops.convert_to_numpy(encoder(features))
    kernel = ops.convert_to_numpy(encoder.fc.kernel).astype(np.float64)
    # Make the bias non-zero so the test sees whether it is applied.
    bias = rng.normal(size=6)
    encoder.fc.bias.assign(bias.astype("float32"))
    regions = ops.convert_to_numpy(encoder(features))
    expected = reference.l2norm(features.astype(np.float64) @ kernel + bias, -1)
    np.testing.assert_allclose(regions, expected, rtol=1e-5, atol=1e-6)
    raw = RegionEncoder(embed_size=6, no_imgnorm=True)
    raw.build(features.shape)
    raw.fc.set_weights([kernel.astype("float32"), bias.astype("float32")])
    np.testing.assert_allclose(
        ops.convert_to_numpy(raw(features)),
        features @ kernel + bias,
        rtol=1e-5,
        atol=1e-5,
    )


def test_region_encoder_initialisation():
    encoder = RegionEncoder(embed_size=300)
    encoder.build((None, 36, 700))
    kernel = ops.convert_to_numpy(encoder.fc.kernel)
    limit = math.sqrt(6.0) / math.sqrt(700 + 300)  # Xavier uniform
    assert np.abs(kernel).max() <= limit
    assert np.abs(kernel).max() > 0.99 * limit
    # A uniform distribution on [-r, r] has standard deviation r / sqrt(3).
    assert kernel.std() == pytest.approx(limit / math.sqrt(3), rel=0.02)
    assert np.all(ops.convert_to_numpy(encoder.fc.bias) == 0)


def test_region_encoder_passes_a_mask_on(rng):
    features = keras.Input((5, 12))
    mask = keras.Input((5,), dtype="bool")
    regions = RegionEncoder(embed_size=6)(features, mask=mask)
    assert get_keras_mask(regions) is not None


# --------------------------------------------------------------- captions


@pytest.mark.parametrize(
    "num_layers,bidirectional,no_txtnorm",
    [(1, True, False), (2, True, False), (1, False, False), (2, False, True)],
)
def test_caption_encoder_matches_gru_equations(
    rng, num_layers, bidirectional, no_txtnorm
):
    encoder = CaptionEncoder(
        vocab_size=12,
        word_dim=5,
        embed_size=4,
        num_layers=num_layers,
        bidirectional=bidirectional,
        no_txtnorm=no_txtnorm,
    )
    encoder.build(TOKENS.shape)
    randomise(encoder, rng)
    words = ops.convert_to_numpy(encoder(TOKENS))
    expected = reference_caption_encoder(encoder, TOKENS)
    np.testing.assert_allclose(words, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_caption_encoder_padding_changes_nothing(rng):
    encoder = CaptionEncoder(vocab_size=12, word_dim=5, embed_size=4, num_layers=2)
    encoder.build(TOKENS.shape)
    randomise(encoder, rng)
    words = ops.convert_to_numpy(encoder(TOKENS))
    padded = np.pad(TOKENS, ((0, 0), (0, 4)))
    words_padded = ops.convert_to_numpy(encoder(padded))
    np.testing.assert_allclose(words_padded[:, :7], words, rtol=1e-6, atol=1e-7)
    assert np.all(words_padded[:, 7:] == 0)
    # Each caption alone, cut to its length, gives the same vectors.
    for c, length in enumerate(LENGTHS):
        alone = ops.convert_to_numpy(encoder(TOKENS[c : c + 1, :length]))
        np.testing.assert_allclose(alone[0], words[c, :length], rtol=1e-5, atol=1e-6)


def test_caption_encoder_initialisation():
    encoder = CaptionEncoder(vocab_size=500, word_dim=300, embed_size=64)
    encoder.build((None, None))
    table = ops.convert_to_numpy(encoder.embedding.embeddings)
    assert np.abs(table).max() <= 0.1 and np.abs(table).max() > 0.099
    bound = 1 / math.sqrt(64)
    for weight in encoder.rnn_layers[0].weights:
        value = ops.convert_to_numpy(weight)
        assert np.abs(value).max() <= bound
        assert np.abs(value).max() > 0.95 * bound


def test_caption_mask_flows_into_attention(rng):
    token_input = keras.Input((None,), dtype="int32")
    words = CaptionEncoder(vocab_size=12, word_dim=5, embed_size=8)(token_input)
    mask = get_keras_mask(words)
    assert mask is not None
    # Eagerly too: the mask marks exactly the non-zero ids.
    encoder = CaptionEncoder(vocab_size=12, word_dim=5, embed_size=8)
    eager_words = encoder(TOKENS)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(get_keras_mask(eager_words)),
        TOKENS != 0,
    )
    images = rng.normal(size=(2, 5, 8)).astype("float32")
    attention = StackedCrossAttention("i2t", lambda_softmax=4.0)
    auto = attention(images, eager_words)
    manual = attention(images, eager_words, captions_mask=TOKENS != 0)
    np.testing.assert_allclose(
        ops.convert_to_numpy(auto), ops.convert_to_numpy(manual), rtol=1e-6
    )


# ------------------------------------------------------ the three together


def build_scan_model(cross_attn="t2i", dtype=None):
    features = keras.Input((5, 12), name="features")
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    regions = RegionEncoder(embed_size=8, dtype=dtype)(features)
    words = CaptionEncoder(vocab_size=12, word_dim=6, embed_size=8, dtype=dtype)(
        token_ids
    )
    sims = StackedCrossAttention(cross_attn, dtype=dtype)(regions, words)
    return keras.Model([features, token_ids], sims)


@pytest.mark.slow
@pytest.mark.parametrize("cross_attn", ["t2i", "i2t"])
def test_training_steps_lower_the_loss(rng, cross_attn):
    from scan_keras.losses import ContrastiveLoss

    model = build_scan_model(cross_attn)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss=ContrastiveLoss(margin=0.2)
    )
    features = rng.normal(size=(4, 5, 12)).astype("float32")
    dummy = np.zeros((4,), "float32")  # the loss reads the diagonal only
    before = model.evaluate([features, TOKENS], dummy, batch_size=4, verbose=0)
    history = model.fit(
        [features, TOKENS], dummy, batch_size=4, epochs=15, verbose=0
    )
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < 0.5 * before


def test_encoders_config_round_trip():
    check_config_round_trip(RegionEncoder(embed_size=7, no_imgnorm=True))
    clone = check_config_round_trip(
        CaptionEncoder(
            vocab_size=50,
            word_dim=3,
            embed_size=5,
            num_layers=2,
            bidirectional=False,
            no_txtnorm=True,
        )
    )
    assert (clone.num_layers, clone.bidirectional) == (2, False)


def test_scan_model_saves_and_loads(rng, tmp_path):
    model = build_scan_model("i2t")
    features = rng.normal(size=(3, 5, 12)).astype("float32")
    check_save_load(model, [features, TOKENS], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_scan_model_under_mixed_precision(rng, policy):
    features = rng.normal(size=(3, 5, 12)).astype("float32")
    full = build_scan_model("t2i")
    half = build_scan_model("t2i", dtype=policy)
    half.set_weights(full.get_weights())
    expected = ops.convert_to_numpy(full([features, TOKENS]))
    sims = ops.convert_to_numpy(ops.cast(half([features, TOKENS]), "float32"))
    assert np.all(np.isfinite(sims))
    # bfloat16 keeps 8 bits of mantissa (float16: 11); lambda_softmax = 9
    # amplifies the error of near-zero similarities of an untrained model.
    atol = 1e-2 if policy == "mixed_float16" else 1e-1
    np.testing.assert_allclose(sims, expected, atol=atol)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: RegionEncoder(embed_size=0), "embed_size"),
        (lambda: CaptionEncoder(vocab_size=-3), "vocab_size"),
        (lambda: CaptionEncoder(vocab_size=10, num_layers=0), "num_layers"),
        (lambda: CaptionEncoder(vocab_size=10, word_dim=2.5), "word_dim"),
    ],
)
def test_bad_options_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_input_shapes_raise():
    with pytest.raises(ValueError, match="features` of rank 3"):
        RegionEncoder(embed_size=4)(np.zeros((2, 12), "float32"))
    with pytest.raises(ValueError, match="token_ids` of rank 2"):
        CaptionEncoder(vocab_size=10)(np.zeros((2, 3, 4), "int32"))
