"""The attention called eagerly runs a compiled function of its own
(layers/eager.py): same numbers as the float64 reference and as the layer
inside a traced function, one compilation per bucket of shapes."""

import keras
import numpy as np
import pytest
from keras import ops

import reference
from helpers import lengths_to_mask, random_batch
from scan_keras.layers import StackedCrossAttention
from scan_keras.layers.eager import bucket, traces

COMPILES = keras.backend.backend() in ("jax", "tensorflow")


def _reference(layer, images, captions, image_lengths, caption_lengths):
    return reference.similarity_matrix(
        images, captions, image_lengths, caption_lengths,
        cross_attn=layer.cross_attn, lambda_softmax=layer.lambda_softmax,
        agg_func=layer.agg_func, lambda_lse=layer.lambda_lse,
        raw_norm=layer.raw_feature_norm, eps=layer.eps,
    )


def _call(layer, images, captions, image_lengths, caption_lengths, **kw):
    return layer(
        images, captions,
        images_mask=lengths_to_mask(image_lengths, images.shape[1]),
        captions_mask=lengths_to_mask(caption_lengths, captions.shape[1]),
        **kw,
    )


def test_buckets_pad_by_at_most_an_eighth():
    sizes = [bucket(n) for n in range(1, 3000)]
    assert all(n <= b <= max(16, n * 9 / 8) for n, b in zip(range(1, 3000), sizes))
    assert sizes == sorted(sizes)
    # A few sizes per doubling: 8 between 1,024 and 2,048.
    assert len(set(sizes[1024:2048])) == 8


@pytest.mark.parametrize("cross_attn, agg_func", [("t2i", "mean"), ("i2t", "logsumexp")])
def test_eager_call_matches_reference_and_the_uncompiled_layer(cross_attn, agg_func):
    rng = np.random.default_rng(0)
    # 19 images and 21 captions are padded to 20 and 22 inside.
    batch = random_batch(rng, n_images=19, n_regions=5, n_captions=21, n_words=6, dim=8)
    layer = StackedCrossAttention(cross_attn, lambda_softmax=6.0, agg_func=agg_func)
    plain = StackedCrossAttention(cross_attn, lambda_softmax=6.0, agg_func=agg_func,
                                  jit_compile=False)
    sims, attention = _call(layer, *batch, return_attention_scores=True)
    plain_sims, plain_attention = _call(plain, *batch, return_attention_scores=True)
    assert sims.shape == (19, 21)
    np.testing.assert_allclose(ops.convert_to_numpy(sims), _reference(layer, *batch),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(sims), ops.convert_to_numpy(plain_sims),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(attention),
                               ops.convert_to_numpy(plain_attention), rtol=1e-5, atol=1e-6)
    assert traces(layer) == (1 if COMPILES else 0)
    assert traces(plain) == 0


def _traced(fn):
    """`fn` run inside the backend's own tracing (no eager dispatch there)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    return fn


def test_eager_call_matches_the_layer_inside_a_traced_function():
    rng = np.random.default_rng(1)
    images, captions, _, _ = random_batch(rng, n_images=7, n_regions=4, n_captions=9, dim=8)
    layer = StackedCrossAttention("t2i", lambda_softmax=9.0)
    eager = ops.convert_to_numpy(layer(images, captions))
    traced = ops.convert_to_numpy(_traced(lambda i, c: layer(i, c))(images, captions))
    np.testing.assert_allclose(eager, traced, rtol=1e-5, atol=1e-6)
    # Inside the trace the layer ran as it is: one compilation, the eager one.
    assert traces(layer) == (1 if COMPILES else 0)


@pytest.mark.skipif(not COMPILES, reason="eager calls are compiled on JAX and TensorFlow")
def test_repeated_calls_compile_once_per_bucket_and_per_options():
    rng = np.random.default_rng(2)
    layer = StackedCrossAttention("t2i", lambda_softmax=9.0)
    captions = rng.normal(size=(40, 6, 8)).astype("float32")
    for n_images in (33, 34, 35, 36, 33):  # one bucket: 36
        layer(rng.normal(size=(n_images, 5, 8)).astype("float32"), captions)
    assert traces(layer) == 1
    layer(rng.normal(size=(37, 5, 8)).astype("float32"), captions)  # bucket 40
    assert traces(layer) == 2
    # Changing lambda_1 between calls must not reuse the old compilation.
    images = rng.normal(size=(36, 5, 8)).astype("float32")
    layer.lambda_softmax = 2.0
    sims = ops.convert_to_numpy(layer(images, captions))
    assert traces(layer) == 3
    lengths = (np.full(36, 5), np.full(40, 6))
    np.testing.assert_allclose(sims, _reference(layer, images, captions, *lengths),
                               rtol=1e-5, atol=1e-6)


def test_jit_compile_is_an_execution_choice_not_saved():
    layer = StackedCrossAttention("t2i", jit_compile=False)
    assert "jit_compile" not in layer.get_config()
    assert layer.execution["jit_compile"] is False
    with pytest.raises(ValueError, match="jit_compile"):
        StackedCrossAttention("t2i", jit_compile="yes")


@pytest.mark.skipif(not COMPILES, reason="eager calls are compiled on JAX and TensorFlow")
def test_tensorflow_compiles_only_calls_of_few_tiles_unless_asked():
    # TensorFlow unrolls the tiles when compiling: "auto" leaves long calls
    # op by op there; JAX compiles its loop over tiles once, whatever their number.
    from scan_keras.layers.eager import MAX_TENSORFLOW_TILES

    rng = np.random.default_rng(3)
    images = rng.normal(size=(2, 3, 8)).astype("float32")
    captions = rng.normal(size=(MAX_TENSORFLOW_TILES + 1, 4, 8)).astype("float32")
    auto = StackedCrossAttention("t2i", chunk_size=1)
    asked = StackedCrossAttention("t2i", chunk_size=1, jit_compile=True)
    np.testing.assert_allclose(ops.convert_to_numpy(auto(images, captions)),
                               ops.convert_to_numpy(asked(images, captions)), rtol=1e-5, atol=1e-6)
    tensorflow = keras.backend.backend() == "tensorflow"
    assert traces(auto) == (0 if tensorflow else 1)
    assert traces(asked) == 1
