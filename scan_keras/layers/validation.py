"""Input checks shared by the layers: clear errors instead of wrong numbers."""

import keras
import numpy as np
from keras import ops

from scan_keras.checks import check_choice  # noqa: F401 (one home, used by the layers)


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


def check_pair_shapes(images_shape, captions_shape):
    """Checks the inputs of a layer scoring images against captions:
    `(I, R, d)` and `(C, W, d)`, the same d where both are known."""
    check_rank(images_shape, 3, "images", "(n_images, n_regions, d)")
    check_rank(captions_shape, 3, "captions", "(n_captions, n_words, d)")
    d_img, d_cap = images_shape[-1], captions_shape[-1]
    if d_img is not None and d_cap is not None and d_img != d_cap:
        raise ValueError(
            "`images` and `captions` must share their feature size d. "
            f"Received: images.shape={tuple(images_shape)}, "
            f"captions.shape={tuple(captions_shape)}"
        )


def check_pair_inputs(images, captions, images_mask=None, captions_mask=None):
    """Everything a pairwise layer checks when called: the shapes, finite
    values, and each mask against its input."""
    check_pair_shapes(images.shape, captions.shape)
    check_finite(images, "images")
    check_finite(captions, "captions")
    if images_mask is not None:
        check_mask(images_mask, images.shape, "images_mask")
    if captions_mask is not None:
        check_mask(captions_mask, captions.shape, "captions_mask")
