"""The fused Pallas kernel (`implementation="pallas"`) against the float64 reference
and the portable layer. On a CPU the kernel runs in Pallas' interpreter;
whether it lowers to Triton for a GPU is checked without one."""

import functools
import itertools
import warnings

import keras
import numpy as np
import pytest
import reference
from helpers import (
    check_config_round_trip,
    input_gradients,
    lengths_to_mask,
    load_benchmark_script,
    random_batch,
)
from keras import ops

from scan_keras.layers import StackedCrossAttention

on_jax = pytest.mark.skipif(keras.backend.backend() != "jax", reason="Pallas is JAX's")
LAMBDA_SOFTMAX = {"t2i": 9.0, "i2t": 4.0}


def fused_batch(rng, n_regions=10):
    # 5 images and 7 captions fill no tile; 11 words pad to 16; 10 regions
    # pad to 12 = 8 + 4; 37 features pad to 40 in steps of 8.
    return random_batch(
        rng, n_images=5, n_regions=n_regions, n_captions=7, n_words=11, dim=37
    )


def reference_sims(batch, **config):
    images, captions, image_lengths, caption_lengths = batch
    return reference.similarity_matrix(
        images,
        captions,
        image_lengths,
        caption_lengths,
        cross_attn=config["cross_attn"],
        lambda_softmax=config["lambda_softmax"],
        agg_func=config["agg_func"],
        lambda_lse=6.0,
        raw_norm=config["raw_feature_norm"],
        eps=1e-8,
    )


def fused_sims(batch, tiles=None, **config):
    from scan_keras.layers.pallas import kernel as pallas_attention

    images, captions, image_lengths, caption_lengths = batch
    sims = pallas_attention.similarities(
        images,
        captions,
        lengths_to_mask(image_lengths, images.shape[1]),
        lengths_to_mask(caption_lengths, captions.shape[1]),
        tiles={"k_block": 8, **(tiles or {})},
        **config,
    )
    return np.asarray(sims)


CASES = [
    *itertools.product(
        ("t2i", "i2t"), ("mean", "logsumexp", "max", "sum"), ("clipped_l2norm",)
    ),
    *itertools.product(
        ("t2i", "i2t"), ("mean",), ("l2norm", "l1norm", "clipped_l1norm")
    ),
]


@on_jax
@pytest.mark.parametrize("cross_attn,agg_func,raw_feature_norm", CASES)
def test_fused_kernel_matches_float64_reference(
    rng, cross_attn, agg_func, raw_feature_norm
):
    batch = fused_batch(rng)
    config = dict(
        cross_attn=cross_attn,
        lambda_softmax=LAMBDA_SOFTMAX[cross_attn],
        agg_func=agg_func,
        raw_feature_norm=raw_feature_norm,
    )
    np.testing.assert_allclose(
        fused_sims(batch, **config),
        reference_sims(batch, **config),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.slow
@on_jax
@pytest.mark.parametrize("cross_attn", ["t2i", "i2t"])
@pytest.mark.parametrize(
    "tiles", [{"images_per_block": 8, "columns": 128}, {"columns": 8}]
)
def test_fused_kernel_tiles_and_paper_regions(rng, cross_attn, tiles):
    # 36 regions (the paper's) split as 32 + 4; other tile shapes, one of
    # them narrower than a caption (one caption a tile).
    batch = fused_batch(rng, n_regions=36)
    config = dict(
        cross_attn=cross_attn,
        lambda_softmax=LAMBDA_SOFTMAX[cross_attn],
        agg_func="logsumexp",
        raw_feature_norm="clipped_l2norm",
    )
    np.testing.assert_allclose(
        fused_sims(batch, tiles, **config),
        reference_sims(batch, **config),
        rtol=1e-5,
        atol=1e-6,
    )


@on_jax
@pytest.mark.parametrize("n_images,n_captions,group", [(27, 16, 4), (40, 20, 8)])
def test_fused_kernel_walks_image_tiles_in_groups(rng, n_images, n_captions, group):
    # 27 images are 7 tiles of 4: no divisor of 7 near 4, so a group of 4
    # and a padded tile; 40 images are 10 tiles, walked in groups of 5.
    # The caption tiles (4 captions each) are as many as a group's image
    # tiles, or a multiple: every mistake in the walk then misses a tile.
    batch = random_batch(
        rng, n_images=n_images, n_regions=5, n_captions=n_captions, n_words=4, dim=8
    )
    config = {
        "cross_attn": "t2i",
        "lambda_softmax": 9.0,
        "agg_func": "mean",
        "raw_feature_norm": "clipped_l2norm",
    }
    np.testing.assert_allclose(
        fused_sims(batch, {"group": group, "columns": 32}, **config),
        reference_sims(batch, **config),
        rtol=1e-5,
        atol=1e-6,
    )


@on_jax
def test_group_of_image_tiles_avoids_padding_when_it_can():
    from scan_keras.layers.pallas.tiles import group_tiles as _group

    assert _group(250, 8) == 5  # 1,000 images in tiles of 4
    assert _group(7, 4) == 4  # padded to 8 tiles
    assert _group(3, 8) == 3
    assert _group(256, 8) == 8


@on_jax
def test_region_parts_are_powers_of_two_covering_the_padded_regions():
    from scan_keras.layers.pallas.tiles import region_parts

    assert region_parts(36) == (32, 4)
    assert region_parts(10) == (8, 4)
    assert region_parts(100) == (64, 32, 4)
    assert region_parts(1) == (4,)


@pytest.mark.slow
@on_jax
@pytest.mark.parametrize("cross_attn", ["t2i", "i2t"])
def test_layer_with_pallas_kernel_scores_and_differentiates_as_portable(
    rng, cross_attn
):
    images, captions, image_lengths, caption_lengths = random_batch(
        rng, n_images=3, n_regions=7, n_captions=5, n_words=6, dim=16
    )
    images_mask = lengths_to_mask(image_lengths, images.shape[1])
    captions_mask = lengths_to_mask(caption_lengths, captions.shape[1])
    weights = rng.normal(size=(3, 5)).astype("float32")
    results = {}
    for kernel in ("portable", "pallas"):
        layer = StackedCrossAttention(
            cross_attn, LAMBDA_SOFTMAX[cross_attn], agg_func="logsumexp", implementation=kernel
        )

        def weighted(images, captions, layer=layer):
            sims = layer(
                images, captions, images_mask=images_mask, captions_mask=captions_mask
            )
            return sims * weights

        sims = ops.convert_to_numpy(weighted(images, captions)) / weights
        results[kernel] = (sims, *input_gradients(weighted, images, captions))
    expected = reference.similarity_matrix(
        images,
        captions,
        image_lengths,
        caption_lengths,
        cross_attn=cross_attn,
        lambda_softmax=LAMBDA_SOFTMAX[cross_attn],
        agg_func="logsumexp",
        lambda_lse=6.0,
        raw_norm="clipped_l2norm",
        eps=1e-8,
    )
    np.testing.assert_allclose(results["pallas"][0], expected, rtol=1e-5, atol=1e-6)
    for got, want in zip(results["pallas"][1:], results["portable"][1:]):
        assert np.abs(want).max() > 0
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@on_jax
def test_layer_with_pallas_kernel_under_jit_and_bfloat16_products(rng):
    import jax

    images, captions, image_lengths, caption_lengths = fused_batch(rng)
    masks = dict(
        images_mask=lengths_to_mask(image_lengths, images.shape[1]),
        captions_mask=lengths_to_mask(caption_lengths, captions.shape[1]),
    )
    sims = {}
    for kernel in ("portable", "pallas"):
        layer = StackedCrossAttention("t2i", product_dtype="bfloat16", implementation=kernel)
        sims[kernel] = np.asarray(
            jax.jit(functools.partial(layer, **masks))(images, captions)
        )
    # Both multiply the same bfloat16 operands into float32 sums.
    np.testing.assert_allclose(sims["pallas"], sims["portable"], rtol=1e-5, atol=1e-6)


@on_jax
def test_attention_weights_with_pallas_kernel_come_from_the_portable_path(rng):
    batch = random_batch(rng)
    images, captions, image_lengths, caption_lengths = batch
    masks = dict(
        images_mask=lengths_to_mask(image_lengths, images.shape[1]),
        captions_mask=lengths_to_mask(caption_lengths, captions.shape[1]),
    )
    fused = StackedCrossAttention("i2t", 4.0, implementation="pallas")
    portable = StackedCrossAttention("i2t", 4.0)
    got = fused(images, captions, return_attention_scores=True, **masks)
    want = portable(images, captions, return_attention_scores=True, **masks)
    for a, b in zip(got, want):
        np.testing.assert_allclose(
            ops.convert_to_numpy(a), ops.convert_to_numpy(b), rtol=1e-6
        )


@on_jax
@pytest.mark.parametrize("cross_attn", ["t2i", "i2t"])
@pytest.mark.parametrize("product_dtype", [None, "bfloat16"])
@pytest.mark.parametrize("tiles", [None, {"images_per_block": 8, "columns": 128}])
def test_fused_kernel_lowers_to_triton_for_a_gpu(cross_attn, product_dtype, tiles):
    # Lowering builds the Triton IR on this machine, GPU or not, and meets
    # Triton's rules (every tile size a power of two, 2-D products) that
    # the interpreter does not enforce.
    import jax
    import jax.numpy as jnp

    from scan_keras.layers.pallas import kernel as pallas_attention

    scores = jax.jit(
        functools.partial(
            pallas_attention.similarities,
            cross_attn=cross_attn,
            agg_func="logsumexp",
            product_dtype=product_dtype,
            tiles=tiles,
            interpret=False,
        )
    )
    shapes = [
        ((8, 36, 1024), "float32"),
        ((16, 12, 1024), "float32"),
        ((8, 36), "bool"),
        ((16, 12), "bool"),
    ]
    lowered = scores.trace(
        *[jax.ShapeDtypeStruct(s, jnp.dtype(t)) for s, t in shapes]
    ).lower(lowering_platforms=("cuda",))
    assert "xla.gpu.triton" in lowered.as_text()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"implementation": "fused"}, "implementation"),
        ({"implementation": "pallas", "raw_feature_norm": "softmax"}, "raw_feature_norm"),
        ({"implementation": "pallas", "lambda_softmax": 50.0}, "lambda_softmax"),
    ],
)
def test_pallas_kernel_rejects_what_it_does_not_compute(kwargs, message):
    # On every backend: what the kernel computes does not depend on where
    # the layer runs.
    with pytest.raises(ValueError, match=message):
        StackedCrossAttention("t2i", **{"lambda_softmax": 9.0, **kwargs})


def test_implementation_is_not_saved():
    layer = StackedCrossAttention("i2t", 4.0, implementation="pallas", chunk_size=3)
    config = layer.get_config()
    for key in ("implementation", "kernel", "chunk_size", "torch_compile"):
        assert key not in config
    assert check_config_round_trip(layer).implementation == "auto"


@pytest.mark.skipif(keras.backend.backend() == "jax", reason="JAX may run the kernel")
def test_pallas_elsewhere_warns_once_and_scores_as_portable(rng):
    images, captions, _, caption_lengths = random_batch(rng)
    mask = lengths_to_mask(caption_lengths, captions.shape[1])
    portable = StackedCrossAttention("t2i")
    fused = StackedCrossAttention("t2i", implementation="pallas")
    with pytest.warns(UserWarning, match="cannot run here"):
        got = fused(images, captions, captions_mask=mask)
    want = portable(images, captions, captions_mask=mask)
    np.testing.assert_array_equal(ops.convert_to_numpy(got), ops.convert_to_numpy(want))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fused(images, captions, captions_mask=mask)
    assert not [w for w in caught if "cannot run here" in str(w.message)]


@on_jax
def test_scan_model_with_pallas_kernel_scores_as_portable(rng):
    from scan_keras.models import SCAN

    portable = SCAN(vocab_size=20, img_dim=16, embed_size=32, word_dim=8)
    features = rng.random((6, 5, 16)).astype("float32")
    token_ids = rng.integers(1, 20, size=(9, 7))
    token_ids[3, 4:] = 0  # a shorter caption
    want = ops.convert_to_numpy(portable.similarity(features, token_ids))
    fused = SCAN.from_config(portable.get_config())
    fused.build()
    fused.set_weights(portable.get_weights())
    fused.attention.implementation = "pallas"
    got = ops.convert_to_numpy(fused.similarity(features, token_ids))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@on_jax
def test_tiles_written_short():
    from scan_keras.layers.pallas.tiles import parse_tiles

    assert parse_tiles("4x64") == {"images_per_block": 4, "columns": 64}
    assert parse_tiles("8x32w8s3") == {
        "images_per_block": 8,
        "columns": 32,
        "num_warps": 8,
        "num_stages": 3,
    }
    with pytest.raises(ValueError, match="4x64w8"):
        parse_tiles("4-64")


@pytest.mark.slow
@on_jax
def test_fit_with_pallas_kernel_trains_as_portable(rng):
    # Keras' compiled train step: the kernel's scores forward, the
    # portable path's gradients back (`with_portable_gradients`).
    from scan_keras.models import SCAN

    batch = {
        "features": rng.random((8, 5, 16)).astype("float32"),
        "token_ids": rng.integers(1, 20, size=(8, 7)),
    }
    trained = {}
    for kernel in ("portable", "pallas"):
        keras.utils.set_random_seed(0)
        model = SCAN(
            vocab_size=20, img_dim=16, embed_size=32, word_dim=8, implementation=kernel
        )
        model.compile(optimizer="adam")
        losses = model.fit(batch, epochs=3, verbose=0).history["loss"]
        trained[kernel] = (losses, model.get_weights())
    assert trained["portable"][0][-1] < trained["portable"][0][0]
    np.testing.assert_allclose(trained["pallas"][0], trained["portable"][0], rtol=1e-5)
    for got, want in zip(trained["pallas"][1], trained["portable"][1]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@on_jax
@pytest.mark.parametrize("cross_attn", ["t2i", "i2t"])
def test_fused_kernel_rounds_operands_to_tf32_for_a_gpu(rng, cross_attn):
    from scan_keras.layers.pallas import kernel as pallas_attention

    emulation = load_benchmark_script("tf32_error")
    images = emulation.random_embeddings(rng, 5, 6, 64, rank=8)
    captions = emulation.random_embeddings(rng, 4, 5, 64, rank=8)
    rounded = emulation.gram_form(images, captions, cross_attn, main="nearest")
    exact = emulation.gram_form(images, captions, cross_attn)
    assert np.abs(rounded - exact).max() > 1e-5 * np.abs(exact).max()
    sims = pallas_attention.similarities(
        images,
        captions,
        cross_attn=cross_attn,
        lambda_softmax=LAMBDA_SOFTMAX[cross_attn],
        tiles={"k_block": 8},
        tf32_rounding=True,
    )
    np.testing.assert_allclose(np.asarray(sims), rounded, rtol=1e-6, atol=1e-7)


@on_jax
def test_captions_longer_than_a_tile_take_the_portable_path(rng, monkeypatch):
    from scan_keras.layers.pallas import kernel as pallas_attention

    # 70 words would make tiles of 128 words, whose shared memory an H100
    # does not have (benchmarks/kernel_resources.py).
    batch = random_batch(rng, n_images=2, n_regions=4, n_captions=3, n_words=70, dim=8)

    def refuse(*args, **kwargs):
        raise AssertionError("the kernel was called")

    monkeypatch.setattr(pallas_attention, "similarities", refuse)
    layer = StackedCrossAttention("t2i", implementation="pallas")
    images, captions, image_lengths, caption_lengths = batch
    sims = layer(
        images,
        captions,
        images_mask=lengths_to_mask(image_lengths, 4),
        captions_mask=lengths_to_mask(caption_lengths, 70),
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(sims),
        reference_sims(
            batch,
            cross_attn="t2i",
            lambda_softmax=9.0,
            agg_func="mean",
            raw_feature_norm="clipped_l2norm",
        ),
        rtol=1e-5,
        atol=1e-6,
    )


@on_jax
@pytest.mark.parametrize(
    "dtype,product_dtype,expected",
    [
        ("mixed_bfloat16", None, "bfloat16"),
        ("float32", None, None),
        ("mixed_float16", "bfloat16", "bfloat16"),
    ],
)
def test_pallas_kernel_multiplies_in_the_16_bit_compute_dtype(
    rng, monkeypatch, dtype, product_dtype, expected
):
    # As the portable layer: a mixed precision policy's compute dtype is
    # the product's, unless `product_dtype` names one.
    from scan_keras.layers.pallas import kernel as pallas_attention

    asked = []
    similarities = pallas_attention.similarities

    def recording(*args, **kwargs):
        asked.append(kwargs["product_dtype"])
        return similarities(*args, **kwargs)

    monkeypatch.setattr(pallas_attention, "similarities", recording)
    images, captions, *_ = random_batch(rng)
    layer = StackedCrossAttention(
        "i2t", 4.0, implementation="pallas", dtype=dtype, product_dtype=product_dtype
    )
    sims = layer(images, captions)
    assert asked == [expected]
    assert keras.backend.standardize_dtype(sims.dtype) == layer.compute_dtype
