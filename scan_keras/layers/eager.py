"""The attention called eagerly, run as a compiled function of its own.

Called with concrete arrays (a notebook, a script, `model.predict` with
`run_eagerly`), a Keras layer runs its operations one by one. For the
attention that means one pass over its large tensor per operation: on
TensorFlow, Keras' default backend, several times slower than the same
layer compiled. So an eager call runs the layer's computation through the
backend's compiler (`jax.jit`, `tf.function(jit_compile=True)`), with the
numbers of images and captions padded up to a few sizes (`bucket`), so a
notebook's calls compile a few times, not once per shape. Inside `fit`,
`predict`, a functional model or any traced function nothing changes: the
inputs are not concrete there. PyTorch runs as it is: eager is its fast
path, and `torch.compile` is the layer's `torch_compile` option.
"""

import keras
import numpy as np
from keras import ops

from scan_keras.layers import platform


def bucket(n):
    """The size `n` rows are padded to: `n` itself up to 16, then the next
    of 16, 18, 20, ..., 30, 32, 36, 40, ...: eight sizes per doubling, so
    at most an eighth of a padded call is padding.
    """
    if n <= 16:
        return max(int(n), 1)
    step = 2 ** (int(n - 1).bit_length() - 4)
    return -(-int(n) // step) * step


# TensorFlow unrolls the loop over tiles when it compiles, so its compile
# time grows with their number: above this many, "auto" runs op by op.
MAX_TENSORFLOW_TILES = 32


def compiles_eager_calls(jit_compile, tiles, *arrays):
    """Whether this call goes through `compiled_call`: asked for (`"auto"`
    or True), on JAX or TensorFlow, with concrete inputs; on TensorFlow,
    `"auto"` only for calls of at most `MAX_TENSORFLOW_TILES` tiles."""
    if jit_compile is False or platform.backend() not in ("jax", "tensorflow"):
        return False
    if platform.backend() == "tensorflow":
        import tensorflow as tf

        if jit_compile == "auto" and tiles > MAX_TENSORFLOW_TILES:
            return False
        return tf.executing_eagerly()
    import jax

    return not any(isinstance(x, jax.core.Tracer) for x in arrays if x is not None)


def compiled_call(layer, fn, images, captions, images_mask, captions_mask, key):
    """`fn(images, captions, images_mask, captions_mask)`, compiled once per
    bucket of input shapes and cached on `layer`.

    The images and captions are padded with zero rows (unmasked, so every
    padded score is finite) up to `bucket` of their counts, and the outputs
    (scores, and attention weights if `fn` returns them) cut back.
    """
    cache = layer.__dict__.get("_scan_keras_eager")
    if cache is None:
        cache = {}
        # Set past Keras' attribute tracking: nothing to save or walk.
        object.__setattr__(layer, "_scan_keras_eager", cache)
    key = (key, images_mask is None, captions_mask is None)
    if key not in cache:
        cache[key] = _compile(layer, fn)
    n_images, n_captions = images.shape[0], captions.shape[0]
    images = _pad(images, bucket(n_images), 0.0)
    captions = _pad(captions, bucket(n_captions), 0.0)
    images_mask = _pad(images_mask, bucket(n_images), True)
    captions_mask = _pad(captions_mask, bucket(n_captions), True)
    outputs = cache[key](images, captions, images_mask, captions_mask)
    return keras.tree.map_structure(lambda x: x[:n_images, :n_captions], outputs)


def traces(layer):
    """How many times `layer`'s eager calls were traced for compiling."""
    return layer.__dict__.get("_scan_keras_traces", 0)


def _compile(layer, fn):
    def counted(*args):
        # Runs once per trace, never in a compiled call.
        object.__setattr__(layer, "_scan_keras_traces", traces(layer) + 1)
        return fn(*args)

    if platform.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(counted, jit_compile=True, reduce_retracing=False)
    import jax

    return jax.jit(counted)


def _pad(x, rows, value):
    if x is None or x.shape[0] == rows:
        return x
    if isinstance(x, np.ndarray):
        return np.concatenate(
            [x, np.full((rows - x.shape[0],) + x.shape[1:], value, x.dtype)]
        )
    widths = [(0, rows - x.shape[0])] + [(0, 0)] * (len(x.shape) - 1)
    return ops.pad(x, widths, constant_values=value)
