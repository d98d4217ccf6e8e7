"""Input checks shared by the layers: clear errors instead of wrong numbers."""

import keras
import numpy as np
from keras import ops


def is_concrete(x):
    """True when `x` holds values now (eager), False while it is being traced.

    Checks that read values (NaN, empty captions) run only on concrete
    tensors, so the layers stay `jit`-compatible: no Python branch ever
    depends on a traced value.
    """
    if isinstance(x, keras.KerasTensor):
        return False
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return not isinstance(x, jax.core.Tracer)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly()
    if backend == "torch":
        import torch

        return not torch.compiler.is_compiling()
    return True


def check_choice(name, value, choices):
    """Raises a ValueError naming `name` unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(
            f"Unknown {name}: expected one of {choices}. "
            f"Received: {name}={value!r}"
        )


def check_rank(shape, rank, name, layout):
    """Raises a ValueError naming `name` unless `shape` has `rank` axes."""
    if len(shape) != rank:
        raise ValueError(
            f"Expected `{name}` of rank {rank}, with shape {layout}. "
            f"Received: {name}.shape={tuple(shape)}"
        )


def check_finite(x, name):
    """Raises a ValueError if a concrete `x` holds NaN or infinity."""
    if is_concrete(x) and not bool(
        ops.convert_to_numpy(ops.all(ops.isfinite(x)))
    ):
        raise ValueError(
            f"`{name}` contains NaN or infinite values; check the features "
            "or the embeddings that produced them."
        )


def check_mask(mask, values_shape, name):
    """Checks a `(batch, length)` mask against `values_shape`.

    The shape is checked whenever it is known; that no row is empty only
    when the mask is concrete (an empty caption has nothing to attend to).
    """
    expected = tuple(values_shape[:2])
    shape = tuple(mask.shape)
    if len(shape) != 2 or any(
        a is not None and b is not None and a != b
        for a, b in zip(shape, expected)
    ):
        raise ValueError(
            f"Expected `{name}` of shape {expected}, matching the first two "
            f"axes of its input. Received: {name}.shape={shape}"
        )
    if is_concrete(mask):
        counts = np.sum(ops.convert_to_numpy(mask), axis=-1)
        if np.any(counts == 0):
            rows = np.flatnonzero(counts == 0)[:5].tolist()
            raise ValueError(
                f"`{name}` marks no valid position in rows {rows}: every "
                "image needs at least one region and every caption at "
                "least one word."
            )
