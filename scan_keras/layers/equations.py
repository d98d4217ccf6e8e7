"""Stacked Cross Attention's equations, in the paper's order.

Paper section 3.2 "Text-Image Stacked Cross Attention" (t2i) and section
3.1 "Image-Text Stacked Cross Attention" (i2t) each take four steps after
the similarities s. The package labels them Eq. 1-4 (t2i) and Eq. 5-8
(i2t): the labels are its own, not the paper's equation numbers.

1. `region_word_scores`: s = v_r . e_w, the one d-sized product.
2. `normalised_logits`: s normalised (Eq. 1 / 5) times lambda_1.
3. `unnormalised_softmax`: e = exp(lambda_1 s_norm) and its sum Z (Eq. 2 / 6).
4. `relevance`: the cosine of each word (region) with its attended vector
   (Eq. 3 / 7), from sums of e s and e^T G e.
5. `pool`: AVG, LSE, max or sum of the relevances (Eq. 4 / 8).

`t2i_scores` and `i2t_scores` chain them for all images against a chunk of
captions. Shapes: I images of R regions, C captions of W words, d features.

The paper's literal form builds one attended d-vector per (image, caption,
word) triple. This never does: with alpha = e / Z the attention weights and
G = V V^T the Gram matrix of an image's regions,

    e_w . a_w   = sum_r alpha[w, r] s[r, w]
    ||a_w||^2   = alpha_w^T G alpha_w

so everything after the product works on (R x W) score tiles. i2t is the
mirror image, with the Gram matrix of each caption's words.
"""

import keras
from keras import ops

from scan_keras.checks import check_choice
from scan_keras.layers import platform
from scan_keras.layers.norms import (
    large_negative,
    leaky_clip,
    normalize_raw_similarity,
    safe_norm,
)
from scan_keras.layers.options import AGG_FUNCS

# TensorFlow's XLA rewrites a sum over more than 32 entries into two sums
# that no longer fuse with what they sum; pieces of at most 32 stay fused.
SUM_PIECE = 32


def sum_over(x, axis, keepdims=False):
    """`ops.sum` over one axis; in pieces under TensorFlow's XLA."""
    n = x.shape[axis]
    if not platform.sums_in_pieces() or n is None or n <= SUM_PIECE:
        return ops.sum(x, axis=axis, keepdims=keepdims)
    axis = axis % len(x.shape)
    n_pieces = -(-n // SUM_PIECE)
    size = -(-n // n_pieces)
    total = None
    for start in range(0, n, size):
        piece = x[(slice(None),) * axis + (slice(start, start + size),)]
        part = ops.sum(piece, axis=axis, keepdims=keepdims)
        total = part if total is None else total + part
    return total


def gram_matrix(x):
    """x x^T over the last two axes (an image's regions, a caption's words),
    in full float32 where products default to TF32."""
    if not platform.tf32_products():
        # A matmul, not an einsum: an einsum sums in another order on a
        # CPU, and trained models would drift from their stored figures.
        return ops.matmul(x, ops.swapaxes(x, -1, -2))
    return platform.full_precision_einsum("...rd,...sd->...rs", x, x)


def product_operand(x, product_dtype=None):
    """An operand of the one large product: cast to `product_dtype` when
    given, and rounded to the nearest TF32 value where float32 products
    run in TF32 (a truncating TF32 product would cost 7e-4 relative error)."""
    if product_dtype is not None:
        x = ops.cast(x, product_dtype)
    if keras.backend.standardize_dtype(x.dtype) == "float32" and platform.tf32_products():
        x = platform.round_to_tf32(x)
    return x


def region_word_scores(images, captions, layout, product_dtype=None):
    """s = v_ir . e_cw in float32: the one d-sized product.

    `layout` is `"ircw"`, with `images` of shape `(I, R, d)`, or `"cwir"`,
    with `images` transposed to `(d, I, R)`: the natural output of one
    matrix product each way, so neither transposes the result. `images`
    has been through `product_operand` already (once for all chunks);
    `captions` go through it here.
    """
    captions = product_operand(captions, product_dtype)
    operands = (images, captions) if layout == "ircw" else (captions, images)
    inputs = "ird,cwd" if layout == "ircw" else "cwd,dir"
    return platform.float32_einsum(f"{inputs}->{layout}", *operands)


def normalised_logits(s, raw_feature_norm, lambda_softmax, axis, mask, eps):
    """lambda_1 times the normalised similarities (Eq. 1 / 5).

    Padded entries of `s` are zero, so they add nothing to an l1 or l2
    norm; those norms fold lambda_1 into the small tensor of inverse norms
    instead of scaling the large one.
    """
    if not raw_feature_norm.endswith(("l2norm", "l1norm")):
        return lambda_softmax * normalize_raw_similarity(
            s, raw_feature_norm, axis=axis, eps=eps, mask=mask
        )
    if raw_feature_norm.startswith("clipped"):
        s = leaky_clip(s)
    if raw_feature_norm.endswith("l2norm"):
        norm = safe_norm(s, axis=axis, keepdims=True, reduce_sum=sum_over)
    else:
        norm = sum_over(ops.abs(s), axis=axis, keepdims=True)
    return s * (lambda_softmax / (norm + eps))


def unnormalised_softmax(logits, axis, mask, bounded):
    """exp(logits) along `axis`, zero where masked, and its sum (Eq. 2 / 6).

    The division by the sum is left to the caller, which applies it to the
    small `(I, C, W)` or `(I, R, C)` results rather than to the large
    tensor. With `bounded` logits (|logits| <= lambda_1 <= 20) exp cannot
    overflow, and the usual shift by the maximum (a reduction and a pass
    over the large tensor) changes nothing.
    """
    if bounded:
        weights = ops.exp(logits)
        if mask is not None:
            weights = weights * ops.cast(mask, weights.dtype)
    else:
        if mask is not None:
            # Masked before the shift: exp(0 - max) could overflow.
            logits = ops.where(mask, logits, large_negative(logits.dtype))
        top = ops.max(logits, axis=axis, keepdims=True)
        weights = ops.exp(logits - ops.stop_gradient(top))
    total = ops.maximum(sum_over(weights, axis=axis), 1e-30)
    return weights, total


def relevance(dot, quad, query_norm, total, eps):
    """Eq. 3 / 7, cos = x.y / max(||x|| ||y||, eps), both sides times Z.

    `dot` is sum e s, `quad` is e^T G e, `total` is Z: the cosine of the
    query with its attended vector is (dot / Z) / max(|q| sqrt(quad) / Z, eps).
    """
    return dot / ops.maximum(
        query_norm * ops.sqrt(ops.maximum(quad, 1e-30)), eps * total
    )


def pool(relevance, agg_func, lambda_lse=6.0, mask=None, axis=-1):
    """Pools relevance scores into one similarity (the package's Eq. 4 and 8).

    Args:
        relevance: relevance R of each word (t2i) or region (i2t).
        agg_func: `"mean"` (AVG), `"logsumexp"` (LSE), `"max"` or `"sum"`.
        lambda_lse: the LSE temperature lambda_2.
        mask: optional boolean mask of the valid entries along `axis`.
        axis: the axis pooled over.

    Returns:
        `relevance` with `axis` reduced.
    """
    check_choice("agg_func", agg_func, AGG_FUNCS)
    dtype = relevance.dtype
    if mask is not None:
        mask = ops.broadcast_to(mask, ops.shape(relevance))
        weights = ops.cast(mask, dtype)
    if agg_func == "sum":
        return ops.sum(relevance if mask is None else relevance * weights, axis)
    if agg_func == "mean":
        if mask is None:
            return ops.mean(relevance, axis=axis)
        count = ops.maximum(ops.sum(weights, axis=axis), 1.0)
        return ops.sum(relevance * weights, axis=axis) / count
    if agg_func == "max":
        if mask is not None:
            relevance = ops.where(
                mask, relevance, ops.cast(large_negative(dtype), dtype)
            )
        return ops.max(relevance, axis=axis)
    # LogSumExp, computed stably: log(sum exp(x - m)) + m, x = lambda_2 R.
    x = lambda_lse * relevance
    if mask is not None:
        x = ops.where(mask, x, ops.cast(large_negative(dtype), dtype))
    top = ops.stop_gradient(ops.max(x, axis=axis, keepdims=True))
    terms = ops.exp(x - top)
    if mask is not None:
        terms = terms * weights
    # The sum is >= 1 wherever a valid entry exists; the floor only keeps
    # fully padded rows (sliced away later) from producing log(0).
    total = ops.maximum(ops.sum(terms, axis=axis), 1e-30)
    return (ops.log(total) + ops.squeeze(top, axis)) / lambda_lse


def _zero_padding(x, mask):
    # Zero features make zero similarities: padded entries then drop out of
    # the norms of Eq. 1 / 5 without masking the large tensor.
    return x if mask is None else x * ops.cast(mask, x.dtype)[..., None]


def t2i_scores(images, captions, images_mask, captions_mask, image_gram, options):
    """Text-to-image: each word attends over an image's regions.

    `images` `(I, R, d)` (padded regions already zero, through
    `product_operand`), `captions` `(C, W, d)`, `image_gram` `(I, R, R)`.
    The large tensors are laid out `(I, R, C, W)`, the product's own order,
    in which the image Gram product batches over the leading axis.

    Returns:
        `(scores (I, C), (weights (I, R, C, W), total (I, C, W)))`.
    """
    captions = _zero_padding(captions, captions_mask)
    s = region_word_scores(images, captions, "ircw", options.product_dtype)
    region_mask = None if images_mask is None else images_mask[:, :, None, None]
    word_mask = None if captions_mask is None else captions_mask[None, None]
    # Normalised across the words for each region; each word then attends
    # over the regions (axis 1).
    logits = normalised_logits(
        s, options.raw_feature_norm, options.lambda_softmax, -1, word_mask, options.eps
    )
    weights, total = unnormalised_softmax(logits, 1, region_mask, options.bounded_logits)
    dot = sum_over(weights * s, axis=1)  # (I, C, W)
    g_e = platform.full_precision_einsum("irs,iscw->ircw", image_gram, weights)
    quad = sum_over(weights * g_e, axis=1)
    query_norm = safe_norm(ops.cast(captions, "float32"), axis=-1)[None]
    r = relevance(dot, quad, query_norm, total, options.eps)
    pool_mask = None if captions_mask is None else captions_mask[None]
    scores = pool(r, options.agg_func, options.lambda_lse, mask=pool_mask, axis=-1)
    return scores, (weights, total)


def i2t_scores(
    images, captions, images_mask, captions_mask, region_norms, options, layout
):
    """Image-to-text: each region attends over a caption's words.

    `images` is `(d, I, R)` for `layout="cwir"` (the product's right
    operand, transposed once per tile) or `(I, R, d)` for `"ircw"` (see
    `platform.i2t_layout`); `region_norms` `(I, R)`. In `(C, W, I, R)` the
    caption Gram product batches over the leading axis.

    Returns:
        `(scores (I, C), (weights, total))`, the weights in `layout`.
    """
    captions = _zero_padding(captions, captions_mask)
    s = region_word_scores(images, captions, layout, options.product_dtype)
    if layout == "cwir":
        # s is (C, W, I, R): regions on the last axis, words on axis 1.
        region_axis, word_axis, pool_axis = -1, 1, -1
        region_mask = None if images_mask is None else images_mask[None, None]
        word_mask = None if captions_mask is None else captions_mask[:, :, None, None]
        pool_mask = None if images_mask is None else images_mask[None]
        query_norm = region_norms[None]  # (1, I, R)
        gram_product = "cvw,cwir->cvir"
    else:
        # s is (I, R, C, W), as for t2i: regions on axis 1, words last.
        region_axis, word_axis, pool_axis = 1, 3, 1
        region_mask = None if images_mask is None else images_mask[:, :, None, None]
        word_mask = None if captions_mask is None else captions_mask[None, None]
        pool_mask = None if images_mask is None else images_mask[:, :, None]
        query_norm = region_norms[:, :, None]  # (I, R, 1)
        gram_product = "cvw,ircw->ircv"
    # Normalised across the regions for each word; each region then attends
    # over the caption's words.
    logits = normalised_logits(
        s, options.raw_feature_norm, options.lambda_softmax, region_axis,
        region_mask, options.eps,
    )
    weights, total = unnormalised_softmax(
        logits, word_axis, word_mask, options.bounded_logits
    )
    dot = sum_over(weights * s, axis=word_axis)  # (C, I, R) or (I, R, C)
    # H = E E^T, each caption's Gram matrix (C, W, W).
    caption_gram = gram_matrix(ops.cast(captions, "float32"))
    h_e = platform.full_precision_einsum(gram_product, caption_gram, weights)
    quad = sum_over(weights * h_e, axis=word_axis)
    r = relevance(dot, quad, query_norm, total, options.eps)
    scores = pool(r, options.agg_func, options.lambda_lse, mask=pool_mask, axis=pool_axis)
    if pool_axis == -1:
        scores = ops.transpose(scores)  # (C, I) -> (I, C)
    return scores, (weights, total)


def attention_weights(weights, total, images_mask, captions_mask, cross_attn, layout):
    """The attention weights alpha as reported: normalised, zero at padding.

    `(I, C, W, R)` for t2i and `(I, C, R, W)` for i2t.
    """
    if cross_attn == "i2t" and layout == "ircw":
        attention = weights / total[..., None]  # (I, R, C, W)
        attention = ops.transpose(attention, (0, 2, 1, 3))
        mask = None if images_mask is None else images_mask[:, None, :, None]
    elif cross_attn == "t2i":
        attention = weights / total[:, None]
        attention = ops.transpose(attention, (0, 2, 3, 1))  # from (I, R, C, W)
        mask = None if captions_mask is None else captions_mask[None, :, :, None]
    else:
        attention = weights / total[:, None]
        attention = ops.transpose(attention, (2, 0, 3, 1))  # from (C, W, I, R)
        mask = None if images_mask is None else images_mask[:, None, :, None]
    if mask is not None:
        attention = attention * ops.cast(mask, attention.dtype)
    return attention
