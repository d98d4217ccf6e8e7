"""StackedCrossAttention against the float64 reference written from the paper."""

import itertools

import keras
import numpy as np
import pytest
from keras import ops

import reference
from helpers import (
    check_config_round_trip,
    check_save_load,
    input_gradients,
    lengths_to_mask,
    load_benchmark_script,
    random_batch,
)
from scan_keras.layers import StackedCrossAttention
from scan_keras.layers.attention import AGG_FUNCS, CROSS_ATTNS
from scan_keras.layers.norms import RAW_FEATURE_NORMS

LAMBDA_SOFTMAX = {"t2i": 9.0, "i2t": 4.0}


def reference_sims(images, captions, image_lengths, caption_lengths, layer):
    return reference.similarity_matrix(
        images,
        captions,
        image_lengths,
        caption_lengths,
        cross_attn=layer.cross_attn,
        lambda_softmax=layer.lambda_softmax,
        agg_func=layer.agg_func,
        lambda_lse=layer.lambda_lse,
        raw_norm=layer.raw_feature_norm,
        eps=layer.eps,
    )


def run_masked(layer, images, captions, image_lengths, caption_lengths, **kw):
    return layer(
        images,
        captions,
        images_mask=lengths_to_mask(image_lengths, images.shape[1]),
        captions_mask=lengths_to_mask(caption_lengths, captions.shape[1]),
        **kw,
    )


def check_matches_reference(layer, batch, return_attention_scores=False):
    """Runs `layer` on the masked `batch`, checks its scores against the
    float64 reference and returns its outputs."""
    outputs = run_masked(layer, *batch, return_attention_scores=return_attention_scores)
    sims = outputs[0] if return_attention_scores else outputs
    expected = reference_sims(*batch, layer)
    assert sims.shape == expected.shape
    np.testing.assert_allclose(ops.convert_to_numpy(sims), expected, rtol=1e-5, atol=1e-6)
    return outputs


def check_same_attention(layer, attention, batch, rtol):
    """`layer`'s attention weights on `batch` equal `attention`."""
    _, got = run_masked(layer, *batch, return_attention_scores=True)
    np.testing.assert_allclose(
        ops.convert_to_numpy(got), ops.convert_to_numpy(attention), rtol=rtol, atol=1e-7
    )


def test_reference_uses_the_same_option_names():
    assert set(CROSS_ATTNS) == set(reference.CROSS_ATTNS)
    assert set(AGG_FUNCS) == set(reference.AGG_FUNCS)
    assert set(RAW_FEATURE_NORMS) == set(reference.RAW_NORMS)


@pytest.mark.parametrize(
    "cross_attn,agg_func,raw_feature_norm",
    list(itertools.product(CROSS_ATTNS, AGG_FUNCS, RAW_FEATURE_NORMS)),
)
def test_matches_float64_reference(rng, cross_attn, agg_func, raw_feature_norm):
    layer = StackedCrossAttention(
        cross_attn=cross_attn,
        lambda_softmax=LAMBDA_SOFTMAX[cross_attn],
        agg_func=agg_func,
        lambda_lse=6.0,
        raw_feature_norm=raw_feature_norm,
    )
    check_matches_reference(layer, random_batch(rng))


@pytest.mark.parametrize("cross_attn", CROSS_ATTNS)
def test_attention_weights_match_reference(rng, cross_attn):
    images, captions, image_lengths, caption_lengths = random_batch(rng)
    layer = StackedCrossAttention(cross_attn, LAMBDA_SOFTMAX[cross_attn])
    _, attention = run_masked(
        layer,
        images,
        captions,
        image_lengths,
        caption_lengths,
        return_attention_scores=True,
    )
    attention = ops.convert_to_numpy(attention)
    n_words, n_regions = captions.shape[1], images.shape[1]
    if cross_attn == "t2i":
        assert attention.shape == (3, 4, n_words, n_regions)
    else:
        assert attention.shape == (3, 4, n_regions, n_words)
    for i, c in itertools.product(range(3), range(4)):
        k, n = image_lengths[i], caption_lengths[c]
        _, expected = reference.pair_score(
            images[i, :k],
            captions[c, :n],
            cross_attn,
            layer.lambda_softmax,
            "mean",
            6.0,
        )
        block = attention[i, c]
        real = block[:n, :k] if cross_attn == "t2i" else block[:k, :n]
        np.testing.assert_allclose(real, expected, rtol=1e-5, atol=1e-7)
        # Padded regions and words get no weight at all.
        assert np.sum(np.abs(block)) == pytest.approx(np.sum(np.abs(real)))


@pytest.mark.slow
@pytest.mark.parametrize("cross_attn", CROSS_ATTNS)
def test_padding_changes_nothing(rng, cross_attn):
    images, captions, image_lengths, caption_lengths = random_batch(rng)
    layer = StackedCrossAttention(cross_attn, agg_func="logsumexp")
    padded = run_masked(layer, images, captions, image_lengths, caption_lengths)
    # Each pair scored alone, cut to its real length: no padding at all.
    for i, c in itertools.product(range(3), range(4)):
        alone = layer(
            images[i : i + 1, : image_lengths[i]],
            captions[c : c + 1, : caption_lengths[c]],
        )
        np.testing.assert_allclose(
            ops.convert_to_numpy(padded)[i, c],
            ops.convert_to_numpy(alone)[0, 0],
            rtol=1e-5,
            atol=1e-7,
        )
    # More padding, filled with large junk, still changes nothing.
    extra = np.concatenate(
        [captions, 50 * rng.normal(size=(4, 3, 8)).astype("float32")], axis=1
    )
    more = run_masked(layer, images, extra, image_lengths, caption_lengths)
    np.testing.assert_allclose(
        ops.convert_to_numpy(more), ops.convert_to_numpy(padded), rtol=1e-6
    )


@pytest.mark.parametrize("cross_attn", CROSS_ATTNS)
@pytest.mark.parametrize("n_captions,chunk_size", [(1, None), (4, 1)])
def test_one_caption_per_chunk_matches_reference(
    rng, cross_attn, n_captions, chunk_size
):
    # One caption against several images broadcasts a batch axis of size
    # 1, which TensorFlow's oneDNN batch matmul (2.21, CPU) got wrong.
    batch = random_batch(rng, n_images=4, n_regions=10, n_captions=n_captions, n_words=7)
    check_matches_reference(StackedCrossAttention(cross_attn, chunk_size=chunk_size), batch)


@pytest.mark.slow
@pytest.mark.parametrize("cross_attn", CROSS_ATTNS)
def test_chunks_give_the_same_matrix(rng, cross_attn):
    images, captions, image_lengths, caption_lengths = random_batch(
        rng, n_captions=7
    )
    whole = StackedCrossAttention(cross_attn, agg_func="logsumexp")
    chunked = StackedCrossAttention(cross_attn, agg_func="logsumexp", chunk_size=3)
    kw = dict(return_attention_scores=True)
    sims, attention = run_masked(
        whole, images, captions, image_lengths, caption_lengths, **kw
    )
    sims_c, attention_c = run_masked(
        chunked, images, captions, image_lengths, caption_lengths, **kw
    )
    assert sims_c.shape == (3, 7)
    np.testing.assert_allclose(
        ops.convert_to_numpy(sims_c), ops.convert_to_numpy(sims), rtol=1e-6
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(attention_c),
        ops.convert_to_numpy(attention),
        rtol=1e-6,
        atol=1e-7,
    )
    # Without masks the chunked path builds its own for the padding captions.
    np.testing.assert_allclose(
        ops.convert_to_numpy(chunked(images, captions)),
        ops.convert_to_numpy(whole(images, captions)),
        rtol=1e-6,
    )


@pytest.mark.parametrize("cross_attn", CROSS_ATTNS)
def test_automatic_tiles_match_reference(rng, cross_attn, monkeypatch):
    # A budget this small forces tiles of images as well as of captions,
    # with remainders on both axes: 7 images in tiles of 4 (balanced from
    # 5) and 9 captions in chunks of 5.
    from scan_keras.layers import attention as module
    from scan_keras.layers.planning import plan_tiles

    small = dict(budget=600, min_chunk=4, tiled_chunk=5)
    batch = random_batch(rng, n_images=7, n_regions=5, n_captions=9, n_words=6)
    images, captions = batch[:2]
    assert plan_tiles(images.shape, captions.shape, **small) == (4, 5)
    # An explicit chunk_size covering all captions turns tiling off.
    assert plan_tiles(images.shape, captions.shape, chunk_size=9, **small) == (None, 9)
    plans = []

    def small_plan(images_shape, captions_shape, budget, chunk_size=None):
        plans.append(plan_tiles(images_shape, captions_shape, chunk_size=chunk_size, **small))
        return plans[-1]

    monkeypatch.setattr(module, "plan_tiles", small_plan)
    layer = StackedCrossAttention(cross_attn, lambda_softmax=LAMBDA_SOFTMAX[cross_attn])
    _, attention = check_matches_reference(layer, batch, return_attention_scores=True)
    assert (4, 5) in plans
    whole = StackedCrossAttention(
        cross_attn, lambda_softmax=LAMBDA_SOFTMAX[cross_attn], chunk_size=9
    )
    check_same_attention(whole, attention, batch, rtol=1e-6)
    assert plans[-1] == (None, 9)


@pytest.mark.parametrize("cross_attn", CROSS_ATTNS)
@pytest.mark.parametrize("raw_feature_norm", ["clipped_l2norm", "l1norm"])
def test_sums_in_pieces_match_reference(rng, cross_attn, raw_feature_norm, monkeypatch):
    # TensorFlow sums over the 36 regions in pieces of at most 32; here
    # every backend sums in pieces of 3, so the 7 regions and 5 words come
    # in uneven pieces (3 + 3 + 1, 3 + 2).
    from scan_keras.layers import equations, platform

    monkeypatch.setattr(platform, "sums_in_pieces", lambda: True)
    monkeypatch.setattr(equations, "SUM_PIECE", 3)
    layer = StackedCrossAttention(
        cross_attn, LAMBDA_SOFTMAX[cross_attn], raw_feature_norm=raw_feature_norm
    )
    check_matches_reference(layer, random_batch(rng, n_regions=7, n_words=5))
    x = rng.normal(size=(2, 7, 5)).astype("float32")
    np.testing.assert_allclose(
        ops.convert_to_numpy(equations.sum_over(ops.convert_to_tensor(x), axis=-2, keepdims=True)),
        x.astype(np.float64).sum(axis=-2, keepdims=True),
        rtol=1e-5,
    )


@pytest.mark.parametrize("agg_func", ["mean", "logsumexp", "max"])
@pytest.mark.parametrize("raw_feature_norm", ["clipped_l2norm", "softmax"])
def test_i2t_region_major_layout_matches_reference(rng, agg_func, raw_feature_norm, monkeypatch):
    # Compiled TensorFlow on a CPU lays i2t's large tensor out (I, R, C, W)
    # instead of (C, W, I, R); here every backend does, in chunks of 3.
    from scan_keras.layers import platform

    batch = random_batch(rng, n_captions=7)
    options = dict(
        lambda_softmax=LAMBDA_SOFTMAX["i2t"], agg_func=agg_func,
        raw_feature_norm=raw_feature_norm, chunk_size=3,
    )
    monkeypatch.setattr(platform, "i2t_layout", lambda: "cwir")
    _, attention = run_masked(
        StackedCrossAttention("i2t", **options), *batch, return_attention_scores=True
    )
    monkeypatch.setattr(platform, "i2t_layout", lambda: "ircw")
    layer = StackedCrossAttention("i2t", **options)
    check_matches_reference(layer, batch)
    check_same_attention(layer, attention, batch, rtol=1e-5)


def test_i2t_layout_is_region_major_only_under_tensorflow_xla_on_a_cpu():
    from scan_keras.layers import platform

    assert platform.i2t_layout() == "cwir"  # eagerly, on every backend
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        seen = []

        @tf.function(jit_compile=True)
        def traced():
            seen.append(platform.i2t_layout())  # runs once, while tracing
            return tf.constant(0)

        traced()
        assert seen == ["ircw"]


@pytest.mark.slow
@pytest.mark.parametrize("cross_attn", CROSS_ATTNS)
def test_torch_compile_matches_reference(rng, cross_attn):
    # On PyTorch each chunk runs through torch.compile: 7 captions in
    # chunks of 3 compile two shapes (3 and the remainder 1). Elsewhere
    # the option is ignored and the same checks hold.
    images, captions, image_lengths, caption_lengths = random_batch(
        rng, n_captions=7
    )
    options = dict(lambda_softmax=LAMBDA_SOFTMAX[cross_attn], chunk_size=3)
    compiled = StackedCrossAttention(cross_attn, torch_compile=True, **options)
    eager = StackedCrossAttention(cross_attn, **options)
    on_torch = keras.backend.backend() == "torch"
    from scan_keras.layers.attention import _score_tile

    assert (compiled._chunk_scorer() is not _score_tile) == on_torch
    batch = (images, captions, image_lengths, caption_lengths)
    _, attention = check_matches_reference(compiled, batch, return_attention_scores=True)
    check_same_attention(eager, attention, batch, rtol=1e-5)
    # Gradients flow through the compiled chunks as through the eager ones.
    images_mask = lengths_to_mask(image_lengths, images.shape[1])
    captions_mask = lengths_to_mask(caption_lengths, captions.shape[1])
    grads = [
        input_gradients(
            lambda im, cap, layer=layer: layer(
                im, cap, images_mask=images_mask, captions_mask=captions_mask
            ),
            images,
            captions,
        )
        for layer in (compiled, eager)
    ]
    for got, want in zip(*grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch.compile")
def test_torch_compile_keeps_compiling_past_eight_shapes(rng):
    # torch keeps 8 compiled versions of a function by default and then
    # silently runs it uncompiled; all layers share `_score_tile`. Two layers,
    # five caption lengths each: 10 versions, every one of them compiled.
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("torch._dynamo")
    logger.addHandler(handler)
    try:
        images, _, image_lengths, _ = random_batch(rng, n_images=2, n_regions=3, dim=4)
        for cross_attn in CROSS_ATTNS:
            layer = StackedCrossAttention(cross_attn, torch_compile=True)
            for n_words in range(1, 6):
                captions = rng.normal(size=(3, n_words, 4)).astype("float32")
                sims = layer(images, captions)
                expected = reference_sims(
                    images, captions, [3, 3], [n_words] * 3, layer
                )
                np.testing.assert_allclose(
                    ops.convert_to_numpy(sims), expected, rtol=1e-5, atol=1e-6
                )
    finally:
        logger.removeHandler(handler)
    assert not [r for r in records if "recompile_limit" in r.getMessage()]


def test_lse_is_stable_at_large_lambda(rng):
    images, captions, image_lengths, caption_lengths = random_batch(rng)
    for cross_attn in CROSS_ATTNS:
        layer = StackedCrossAttention(
            cross_attn, agg_func="logsumexp", lambda_lse=50.0
        )
        sims = ops.convert_to_numpy(
            run_masked(layer, 30 * images, 30 * captions, image_lengths, caption_lengths)
        )
        assert np.all(np.isfinite(sims))
        expected = reference_sims(
            30 * images, 30 * captions, image_lengths, caption_lengths, layer
        )
        np.testing.assert_allclose(sims, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cross_attn", CROSS_ATTNS)
@pytest.mark.parametrize(
    "raw_feature_norm,lambda_softmax,scale",
    [
        # Bounded norms up to lambda_1 = 20 skip the shift by the maximum;
        # above it, and for the unbounded norms, the shift is needed.
        ("clipped_l2norm", 20.0, 1.0),
        ("clipped_l2norm", 80.0, 1.0),
        ("l1norm", 60.0, 1.0),
        ("no_norm", 9.0, 30.0),
        ("clipped", 4.0, 30.0),
    ],
)
def test_sharp_softmax_matches_reference(
    rng, cross_attn, raw_feature_norm, lambda_softmax, scale
):
    images, captions, image_lengths, caption_lengths = random_batch(rng)
    images, captions = scale * images, scale * captions
    layer = StackedCrossAttention(
        cross_attn, lambda_softmax, raw_feature_norm=raw_feature_norm
    )
    sims, attention = run_masked(
        layer,
        images,
        captions,
        image_lengths,
        caption_lengths,
        return_attention_scores=True,
    )
    expected = reference_sims(images, captions, image_lengths, caption_lengths, layer)
    np.testing.assert_allclose(
        ops.convert_to_numpy(sims), expected, rtol=1e-5, atol=1e-5
    )
    # Each query's weights still sum to one over the valid keys.
    attention = ops.convert_to_numpy(attention)
    assert np.all(np.isfinite(attention))
    totals = attention.sum(axis=-1)
    valid = totals > 0
    np.testing.assert_allclose(totals[valid], 1.0, rtol=1e-5)


@pytest.mark.parametrize("cross_attn", CROSS_ATTNS)
def test_bfloat16_product_stays_close_to_float64(rng, cross_attn):
    # Unit vectors with shared structure, as trained encoders produce: the
    # benchmark's error bound for the bf16 option is checked here.
    basis = rng.normal(size=(16, 128))
    images = rng.normal(size=(6, 20, 16)) @ basis + rng.normal(size=(6, 20, 128))
    captions = rng.normal(size=(9, 10, 16)) @ basis + rng.normal(size=(9, 10, 128))
    images /= np.linalg.norm(images, axis=-1, keepdims=True)
    captions /= np.linalg.norm(captions, axis=-1, keepdims=True)
    images, captions = images.astype("float32"), captions.astype("float32")
    lengths = (np.full(6, 20), rng.integers(4, 11, size=9))
    layer = StackedCrossAttention(
        cross_attn, LAMBDA_SOFTMAX[cross_attn], product_dtype="bfloat16"
    )
    sims = run_masked(layer, images, captions, *lengths)
    assert keras.backend.standardize_dtype(sims.dtype) == "float32"
    expected = reference_sims(images, captions, *lengths, layer)
    error = np.max(np.abs(ops.convert_to_numpy(sims) - expected))
    assert error / np.max(np.abs(expected)) <= 3e-3
    # ... and bf16 really is used: float32 operands land much closer.
    exact = StackedCrossAttention(cross_attn, LAMBDA_SOFTMAX[cross_attn])
    exact_error = np.max(
        np.abs(ops.convert_to_numpy(run_masked(exact, images, captions, *lengths)) - expected)
    )
    assert exact_error < error / 10


def test_lse_lies_between_mean_and_max(rng):
    # lambda_2 moves LSE from near the mean (small) to the max (large).
    images, captions, _, _ = random_batch(rng)

    def sims(agg_func, lambda_lse=6.0):
        layer = StackedCrossAttention("t2i", agg_func=agg_func, lambda_lse=lambda_lse)
        return ops.convert_to_numpy(layer(images, captions))

    n_words = captions.shape[1]
    top = sims("max")
    assert np.all(sims("logsumexp", 200.0) >= top - 1e-6)
    np.testing.assert_allclose(sims("logsumexp", 2000.0), top, atol=1e-3)
    small = sims("logsumexp", 1e-3) - np.log(n_words) / 1e-3
    np.testing.assert_allclose(small, sims("mean"), atol=1e-3)


@pytest.mark.parametrize("cross_attn", CROSS_ATTNS)
def test_mask_from_embedding_reaches_the_layer(rng, cross_attn):
    vocab, dim = 20, 8
    token_ids = np.array(
        [[3, 5, 7, 9, 0, 0], [4, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6]], "int32"
    )
    images = rng.normal(size=(2, 5, dim)).astype("float32")
    token_input = keras.Input((None,), dtype="int32")
    image_input = keras.Input((5, dim))
    embedding = keras.layers.Embedding(vocab, dim, mask_zero=True)
    layer = StackedCrossAttention(cross_attn)
    sims = layer(image_input, embedding(token_input))
    model = keras.Model([image_input, token_input], sims)
    auto = ops.convert_to_numpy(model([images, token_ids]))
    # The same layer, given the mask by hand, and the reference.
    words = embedding(token_ids)
    manual = layer(images, words, captions_mask=token_ids != 0)
    np.testing.assert_allclose(auto, ops.convert_to_numpy(manual), rtol=1e-5)
    expected = reference_sims(
        images, ops.convert_to_numpy(words), [5, 5], [4, 1, 6], layer
    )
    np.testing.assert_allclose(auto, expected, rtol=1e-5, atol=1e-6)
    # Without any mask, padded words would count: the numbers must differ.
    unmasked = ops.convert_to_numpy(layer(images, ops.convert_to_numpy(words)))
    assert not np.allclose(unmasked[:, :2], auto[:, :2], rtol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("cross_attn", CROSS_ATTNS)
def test_gradients_are_finite_and_match_finite_differences(rng, cross_attn):
    images, captions, image_lengths, caption_lengths = random_batch(
        rng, n_images=2, n_regions=4, n_captions=3, n_words=4, dim=5
    )
    images_mask = lengths_to_mask(image_lengths, 4)
    captions_mask = lengths_to_mask(caption_lengths, 4)
    layer = StackedCrossAttention(cross_attn, agg_func="logsumexp")

    def fn(im, cap):
        return layer(im, cap, images_mask=images_mask, captions_mask=captions_mask)

    grad_images, grad_captions = input_gradients(fn, images, captions)
    assert np.all(np.isfinite(grad_images)) and np.all(np.isfinite(grad_captions))

    def total(im, cap):
        return reference_sims(im, cap, image_lengths, caption_lengths, layer).sum()

    h = 1e-6
    images64, captions64 = images.astype(np.float64), captions.astype(np.float64)
    for grad, array, which in (
        (grad_images, images64, 0),
        (grad_captions, captions64, 1),
    ):
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            plus, minus = array.copy(), array.copy()
            plus[index] += h
            minus[index] -= h
            args_plus = (plus, captions64) if which == 0 else (images64, plus)
            args_minus = (minus, captions64) if which == 0 else (images64, minus)
            numeric[index] = (total(*args_plus) - total(*args_minus)) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-4)
    # Padding gets exactly zero gradient.
    assert np.all(grad_images[~images_mask] == 0)
    assert np.all(grad_captions[~captions_mask] == 0)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(rng, policy):
    images, captions, image_lengths, caption_lengths = random_batch(rng)
    # Unit vectors, as the encoders produce them.
    images /= np.linalg.norm(images, axis=-1, keepdims=True)
    captions /= np.linalg.norm(captions, axis=-1, keepdims=True)
    for cross_attn in CROSS_ATTNS:
        full = StackedCrossAttention(cross_attn, agg_func="logsumexp")
        half = StackedCrossAttention(cross_attn, agg_func="logsumexp", dtype=policy)
        expected = run_masked(full, images, captions, image_lengths, caption_lengths)
        sims, attention = run_masked(
            half,
            images,
            captions,
            image_lengths,
            caption_lengths,
            return_attention_scores=True,
        )
        assert keras.backend.standardize_dtype(sims.dtype) == policy.split("_")[1]
        sims = ops.convert_to_numpy(ops.cast(sims, "float32"))
        assert np.all(np.isfinite(sims))
        assert np.all(np.isfinite(ops.convert_to_numpy(ops.cast(attention, "float32"))))
        np.testing.assert_allclose(
            sims, ops.convert_to_numpy(expected), rtol=0, atol=3e-2
        )


def test_config_round_trip():
    layer = StackedCrossAttention(
        "i2t",
        lambda_softmax=4.0,
        agg_func="logsumexp",
        lambda_lse=20.0,
        raw_feature_norm="softmax",
        eps=1e-6,
        chunk_size=16,
        product_dtype="bfloat16",
        torch_compile=True,
        name="xattn",
    )
    clone = check_config_round_trip(layer)
    for key in (
        "cross_attn",
        "lambda_softmax",
        "agg_func",
        "lambda_lse",
        "raw_feature_norm",
        "eps",
        "product_dtype",
    ):
        assert getattr(clone, key) == getattr(layer, key)
    # How the layer runs is chosen where it runs, not saved with it.
    assert (clone.chunk_size, clone.torch_compile, clone.implementation) == (
        None, False, "auto"
    )


@pytest.mark.parametrize("cross_attn", CROSS_ATTNS)
def test_functional_model_saves_and_loads(rng, tmp_path, cross_attn):
    images, captions, image_lengths, caption_lengths = random_batch(rng)
    image_input = keras.Input((5, 8), name="images")
    caption_input = keras.Input((6, 8), name="captions")
    mask_input = keras.Input((6,), dtype="bool", name="captions_mask")
    layer = StackedCrossAttention(cross_attn, agg_func="logsumexp", lambda_lse=5.0)
    sims, attention = layer(
        image_input,
        caption_input,
        captions_mask=mask_input,
        return_attention_scores=True,
    )
    # Symbolic shapes agree with what eager calls produce.
    assert tuple(sims.shape) == (None, None)
    model = keras.Model([image_input, caption_input, mask_input], [sims, attention])
    inputs = [images, captions, lengths_to_mask(caption_lengths, 6)]
    out_sims, out_attention = [
        ops.convert_to_numpy(x) for x in model(inputs)
    ]
    assert out_attention.shape == tuple(
        (3, 4, 6, 5) if cross_attn == "t2i" else (3, 4, 5, 6)
    )
    expected = reference_sims(images, captions, [5] * 3, caption_lengths, layer)
    np.testing.assert_allclose(out_sims, expected, rtol=1e-5, atol=1e-6)
    restored = check_save_load(model, inputs, tmp_path)
    assert restored.layers[-1].get_config() == layer.get_config()


def test_output_shape_without_calling():
    layer = StackedCrossAttention()
    assert layer.compute_output_shape((10, 36, 64), (50, 12, 64)) == (10, 50)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(cross_attn="text2image"), "cross_attn"),
        (dict(agg_func="Mean"), "agg_func"),
        (dict(raw_feature_norm="l3norm"), "raw_feature_norm"),
        (dict(lambda_softmax=0), "lambda_softmax"),
        (dict(lambda_lse=-1.0), "lambda_lse"),
        (dict(eps=0.0), "eps"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(product_dtype="int8"), "product_dtype"),
        (dict(torch_compile="yes"), "torch_compile"),
        (dict(lambda_softmax=True), "lambda_softmax"),
        (dict(chunk_size=True), "chunk_size"),
    ],
)
def test_bad_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StackedCrossAttention(**kwargs)


def test_bad_inputs_raise(rng):
    layer = StackedCrossAttention()
    images = rng.normal(size=(2, 5, 8)).astype("float32")
    captions = rng.normal(size=(3, 6, 8)).astype("float32")
    with pytest.raises(ValueError, match="share their feature size"):
        layer(images, captions[..., :7])
    with pytest.raises(ValueError, match="images` of rank 3"):
        layer(images[0], captions)
    with pytest.raises(ValueError, match="captions` of rank 3"):
        layer(images, captions[None])
    with pytest.raises(ValueError, match="captions_mask"):
        layer(images, captions, captions_mask=np.ones((3, 5), bool))
    empty = np.ones((3, 6), bool)
    empty[1] = False
    with pytest.raises(ValueError, match=r"no valid position in rows \[1\]"):
        layer(images, captions, captions_mask=empty)
    bad = images.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="images` contains NaN"):
        layer(bad, captions)


@pytest.mark.parametrize("cross_attn", CROSS_ATTNS)
def test_compiled_predict_matches_eager(rng, cross_attn):
    # predict() traces the layer (tf.function / jax.jit): nothing may branch
    # on tensor values, and the masks must survive tracing.
    images, captions, image_lengths, caption_lengths = random_batch(
        rng, n_images=4, n_captions=4
    )
    image_input = keras.Input((5, 8))
    caption_input = keras.Input((6, 8))
    images_mask = keras.Input((5,), dtype="bool")
    captions_mask = keras.Input((6,), dtype="bool")
    layer = StackedCrossAttention(cross_attn, agg_func="max", chunk_size=3)
    sims = layer(
        image_input,
        caption_input,
        images_mask=images_mask,
        captions_mask=captions_mask,
    )
    model = keras.Model(
        [image_input, caption_input, images_mask, captions_mask], sims
    )
    inputs = [
        images,
        captions,
        lengths_to_mask(image_lengths, 5),
        lengths_to_mask(caption_lengths, 6),
    ]
    compiled = model.predict(inputs, batch_size=4, verbose=0)
    expected = reference_sims(images, captions, image_lengths, caption_lengths, layer)
    np.testing.assert_allclose(compiled, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX's GPU defaults")
@pytest.mark.parametrize("cross_attn", CROSS_ATTNS)
def test_tf32_products_round_operands_to_nearest(rng, monkeypatch, cross_attn):
    # As on a GPU (faked here): the large product's float32 operands are
    # rounded to the nearest TF32 value, the Gram products stay float32.
    from scan_keras.layers import platform

    emulation = load_benchmark_script("tf32_error")
    images = emulation.random_embeddings(rng, 3, 6, 64, rank=8)
    captions = emulation.random_embeddings(rng, 4, 5, 64, rank=8)
    exact = emulation.gram_form(images, captions, cross_attn)
    rounded = emulation.gram_form(images, captions, cross_attn, main="nearest")
    assert np.abs(rounded - exact).max() > 1e-5 * np.abs(exact).max()
    monkeypatch.setattr(platform, "on_accelerator", lambda: True)
    layer = StackedCrossAttention(cross_attn, LAMBDA_SOFTMAX[cross_attn])
    sims = ops.convert_to_numpy(layer(images, captions))
    np.testing.assert_allclose(sims, rounded, rtol=1e-6, atol=1e-7)
    # A CPU multiplies in float32 whatever the precision: check that the
    # Gram products ask for full float32 and the large one does not.
    import jax

    precisions = {}
    for eqn in jax.make_jaxpr(layer)(images, captions).jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            d_sized = images.shape[-1] in [v.aval.shape[-1] for v in eqn.invars]
            key = "large" if d_sized and eqn.invars[0].aval.shape != eqn.invars[1].aval.shape else "gram"
            precisions.setdefault(key, []).append(eqn.params["precision"])
    assert precisions["large"] == [None]
    highest = (jax.lax.Precision.HIGHEST,) * 2
    assert precisions["gram"] == [highest, highest]
