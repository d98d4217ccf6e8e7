"""Test helpers: random inputs, gradients on any backend, and the layer checks
every public layer goes through (config, shapes, training, precision, saving)."""

import os

import keras
import numpy as np
import pytest
from keras import ops

import reference


BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def load_benchmark_script(name):
    """A script of `benchmarks/` as a module; the folder is importable
    while it loads (the scripts import each other)."""
    import importlib.util
    import sys

    sys.path.insert(0, BENCHMARKS)
    try:
        spec = importlib.util.spec_from_file_location(
            f"benchmark_{name}", os.path.join(BENCHMARKS, f"{name}.py")
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(BENCHMARKS)
    return module


def lengths_to_mask(lengths, max_length):
    return np.arange(max_length)[None, :] < np.asarray(lengths)[:, None]


def random_batch(rng, n_images=3, n_regions=5, n_captions=4, n_words=6, dim=8):
    """Padded images and captions with mixed lengths and junk in the padding.

    Padding holds random values, not zeros, so a test passes only if the
    layer really ignores it.
    """
    images = rng.normal(size=(n_images, n_regions, dim)).astype("float32")
    captions = rng.normal(size=(n_captions, n_words, dim)).astype("float32")
    image_lengths = rng.integers(1, n_regions + 1, size=n_images)
    caption_lengths = rng.integers(1, n_words + 1, size=n_captions)
    image_lengths[0], caption_lengths[0] = n_regions, n_words
    caption_lengths[-1] = 1  # a one-word caption is the sharpest edge case
    return images, captions, image_lengths, caption_lengths


def input_gradients(fn, *arrays):
    """Gradients of sum(fn(*arrays)) with respect to every array, as NumPy."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        grads = jax.grad(
            lambda *xs: ops.sum(fn(*xs)), argnums=tuple(range(len(arrays)))
        )(*[ops.convert_to_tensor(a) for a in arrays])
    elif backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.convert_to_tensor(a) for a in arrays]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            total = ops.sum(fn(*tensors))
        grads = tape.gradient(total, tensors)
    elif backend == "torch":
        import torch

        tensors = [
            ops.convert_to_tensor(a).detach().requires_grad_(True)
            for a in arrays
        ]
        total = ops.sum(fn(*tensors))
        total.backward()
        grads = [t.grad for t in tensors]
    else:
        raise NotImplementedError(backend)
    return [ops.convert_to_numpy(g) for g in grads]


def check_config_round_trip(layer):
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is type(layer)
    assert restored.get_config() == config
    return clone


def check_save_load(model, inputs, tmp_path, atol=1e-6):
    """Saves `model` as .keras, loads it without custom_objects, compares."""
    expected = model(inputs)
    path = os.path.join(str(tmp_path), "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    actual = restored(inputs)
    for a, b in zip(keras.tree.flatten(actual), keras.tree.flatten(expected)):
        np.testing.assert_allclose(
            ops.convert_to_numpy(a), ops.convert_to_numpy(b), rtol=1e-5, atol=atol
        )
    return restored


def get_keras_mask(x):
    """The mask Keras attached to `x` (no public accessor exists)."""
    return getattr(x, "_keras_mask", None)


def gru_weights(gru):
    cell = gru.cell
    return [
        ops.convert_to_numpy(w)
        for w in (cell.kernel, cell.recurrent_kernel, cell.bias)
    ]


def randomise(layer, rng, scale=0.5):
    """Random weights, not the initialisers', so that every weight matters."""
    for variable in layer.weights:
        value = scale * rng.normal(size=variable.shape)
        variable.assign(value.astype(variable.dtype))


def reference_caption_encoder(encoder, token_ids):
    """The caption encoder written out per caption, on unpadded sequences."""
    table = ops.convert_to_numpy(encoder.embedding.embeddings).astype(np.float64)
    outputs = np.zeros(token_ids.shape + (encoder.embed_size,))
    for c, ids in enumerate(token_ids):
        length = int(np.sum(ids != 0))
        x = table[ids[:length]]
        for k, rnn in enumerate(encoder.rnn_layers):
            last = k == len(encoder.rnn_layers) - 1
            if not encoder.bidirectional:
                x = reference.gru_sequence(x, *gru_weights(rnn))
                continue
            forward = reference.gru_sequence(x, *gru_weights(rnn.forward_layer))
            backward = reference.gru_sequence(
                x, *gru_weights(rnn.backward_layer), reverse=True
            )
            # Inner layers pass both directions on; the last one averages.
            x = (forward + backward) / 2 if last else np.concatenate(
                [forward, backward], axis=-1
            )
        if not encoder.no_txtnorm:
            x = reference.l2norm(x, -1)
        outputs[c, :length] = x
    return outputs


# Tests of backend-independent mechanics (subprocesses, signals, files read
# under each backend in turn) run once, under PyTorch: the quickest to start
# a process.
once = pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="backend-independent (subprocesses): run under PyTorch",
)


def model_for_folder(folder, img_dim, model_class=None, embed_size=16, seed=0):
    """A small untrained model on the vocabulary of a data folder, seeded."""
    from scan_keras.data import Vocabulary
    from scan_keras.models import SCAN

    keras.utils.set_random_seed(seed)
    vocabulary = Vocabulary.load(os.path.join(folder, "vocab.json"))
    model = (model_class or SCAN)(
        vocabulary=vocabulary, img_dim=img_dim, embed_size=embed_size, word_dim=8
    )
    model.build()
    return model


def check_trains_saves_and_loads(model, tmp_path, features, token_ids):
    """Twenty epochs on one batch halve the loss; the saved `.keras` file
    loads as the same class and scores exactly as the model does.
    Returns the loaded model."""
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    batch = {"features": features, "token_ids": token_ids}
    losses = model.fit(batch, epochs=20, verbose=0).history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is type(model)
    np.testing.assert_array_equal(
        restored.similarity(features, token_ids), model.similarity(features, token_ids)
    )
    return restored
