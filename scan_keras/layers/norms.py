"""Normalisations used by SCAN, written once for every layer.

The paper normalises the raw region-word similarities before the attention
softmax with a clipped l2 norm (sections 3.1 "Image-Text Stacked Cross
Attention" and 3.2 "Text-Image Stacked Cross Attention"; Eq. 5 and 1 in the
package's labels of `equations.py`), the reference code offers several other
choices (`raw_feature_norm`), and the encoders l2-normalise their outputs.
All functions take an optional boolean `mask` (broadcastable to `x`) marking
the entries that take part: masked entries never change the result.
"""

import keras
from keras import ops

from scan_keras.layers.validation import check_choice

RAW_FEATURE_NORMS = (
    "clipped_l2norm",
    "l2norm",
    "l1norm",
    "clipped_l1norm",
    "softmax",
    "clipped",
    "no_norm",
)

# Slope of the leaky ReLU the reference code uses for "clipping" ([x]_+ in
# the paper); a hard ReLU would zero every gradient of negative similarities.
LEAKY_SLOPE = 0.1

# Floor under squared norms before the square root. sqrt has an infinite
# derivative at 0 (padded, all-zero vectors), and inf * 0 = NaN in backprop.
# 1e-30 is far below eps**2 = 1e-16, so no value the formulas produce changes.
SQUARE_FLOOR = 1e-30


def leaky_clip(s):
    """The reference code's clipping, [s]_+: a leaky ReLU of slope
    `LEAKY_SLOPE`.

    On JAX it is written max(s, slope * s), the same values for a slope in
    [0, 1] (subnormal ones aside, which XLA's CPU code flushes to zero, as
    the next operation would). XLA's CPU fusions keep a maximum in the pass
    after the product, but give the select of `leaky_relu` a pass of its
    own over the large tensor (docs/performance.md measures both). Eager
    PyTorch would run the maximum as two operations, so the other backends
    keep the select.
    """
    if keras.backend.backend() == "jax":
        return ops.maximum(s, LEAKY_SLOPE * s)
    return ops.leaky_relu(s, negative_slope=LEAKY_SLOPE)


def large_negative(dtype):
    """A large negative number that is safe to add in `dtype` (float16 too)."""
    return -3e4 if keras.backend.standardize_dtype(dtype) == "float16" else -1e9


def safe_norm(x, axis=-1, keepdims=False, reduce_sum=ops.sum):
    """Euclidean norm with a finite gradient at x = 0.

    `reduce_sum(x, axis=..., keepdims=...)` sums the squares.
    """
    squared = reduce_sum(ops.square(x), axis=axis, keepdims=keepdims)
    return ops.sqrt(ops.maximum(squared, SQUARE_FLOOR))


def l2norm(x, axis=-1, eps=1e-8, mask=None):
    """x / (||x||_2 + eps) along `axis`, as in the reference code.

    16-bit inputs are normalised in float32: eps = 1e-8 is zero in float16,
    and an all-zero (padded) vector would give 0 / 0.
    """
    dtype = keras.backend.standardize_dtype(x.dtype)
    if dtype in ("float16", "bfloat16"):
        x = ops.cast(x, "float32")
    if mask is not None:
        x = x * ops.cast(mask, x.dtype)
    x = x / (safe_norm(x, axis=axis, keepdims=True) + eps)
    return ops.cast(x, dtype)


def l1norm(x, axis=-1, eps=1e-8, mask=None):
    """x / (sum |x| + eps) along `axis`."""
    if mask is not None:
        x = x * ops.cast(mask, x.dtype)
    return x / (ops.sum(ops.abs(x), axis=axis, keepdims=True) + eps)


def masked_softmax(x, axis=-1, mask=None):
    """Softmax along `axis` over the entries where `mask` is True.

    Rows without any valid entry come out as zeros rather than NaN.
    """
    if mask is not None:
        mask = ops.broadcast_to(mask, ops.shape(x))
        x = ops.where(mask, x, ops.cast(large_negative(x.dtype), x.dtype))
    # Written out rather than ops.softmax: an axis of length one (a
    # one-word caption, a one-region image) is legitimate here.
    top = ops.stop_gradient(ops.max(x, axis=axis, keepdims=True))
    weights = ops.exp(x - top)
    if mask is not None:
        weights = weights * ops.cast(mask, x.dtype)
    total = ops.sum(weights, axis=axis, keepdims=True)
    return weights / ops.maximum(total, ops.cast(1e-30, x.dtype))


def normalize_raw_similarity(s, kind, axis, eps=1e-8, mask=None):
    """Applies one of the reference code's `raw_feature_norm` options.

    Args:
        s: raw region-word similarities.
        kind: one of `RAW_FEATURE_NORMS`.
        axis: the axis normalised over (the words for t2i, the regions for
            i2t).
        eps: added to the norms.
        mask: optional boolean mask of the valid entries along `axis`.

    Returns:
        A tensor of the shape of `s`, with zeros at masked entries.
    """
    check_choice("raw_feature_norm", kind, RAW_FEATURE_NORMS)
    if kind.startswith("clipped"):
        s = leaky_clip(s)
    if kind.endswith("l2norm"):
        return l2norm(s, axis=axis, eps=eps, mask=mask)
    if kind.endswith("l1norm"):
        return l1norm(s, axis=axis, eps=eps, mask=mask)
    if kind == "softmax":
        return masked_softmax(s, axis=axis, mask=mask)
    # "clipped" and "no_norm": nothing along the axis.
    if mask is not None:
        s = s * ops.cast(mask, s.dtype)
    return s
