"""Stacked Cross Attention as one fused Pallas kernel (JAX on a GPU).

The portable layer (`attention.py`, `equations.py`) writes the (images, regions, captions,
words) score tensor to memory and reads it back several times: normalising,
the softmax, the Gram product and each sum are separate passes. Here one
Triton kernel per tile of images x captions computes the region-word
scores, keeps them on chip and returns only the pooled `(I, C)` similarity:
the large tensor never reaches memory. The equations are the same Gram form
as `attention.py` (see its module docstring), tile by tile.

Triton works on 2-D tiles whose every size is a power of two. A tile's rows
are the regions of `images_per_block` images and its columns the words of
a few captions, so the words are padded to a power of two, and the regions
(36 in the paper's features) are padded to a multiple of 4 and split into
power-of-two parts (36 = 32 + 4). Each part is its own matrix product, and a
sum over an image's regions is a sum over its rows in every part. The Gram
product of each image (t2i) or caption (i2t) is one product with a
block-diagonal matrix of the tile's Gram matrices.

Only the forward pass is fused; gradients come from the portable layer
(`jax.custom_vjp`), so the layer trains the same either way. "Eq. N" in
the comments are the package's labels of `equations.py`, not the paper's
equation numbers.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from scan_keras.layers.norms import (
    LEAKY_SLOPE,
    SQUARE_FLOOR,
    large_negative,
    safe_norm,
)
from scan_keras.layers.options import FUSED_NORMS, fused_unsupported  # noqa: F401
from scan_keras.layers.pallas.tiles import (
    DEFAULT_TILES,
    group_tiles,
    padded_words,
    region_parts,
    round_up,
)
from scan_keras.layers.platform import round_to_tf32

_LARGE_NEGATIVE = large_negative("float32")


def _norm_terms(x, kind):
    """What the l2 (squares) or l1 (absolute values) norm sums."""
    return x * x if kind.endswith("l2norm") else jnp.abs(x)


def _scale(summed, kind, eps, lambda_softmax):
    """lambda_1 / (||x|| + eps), from the sum of `_norm_terms` (Eq. 1 / 5)."""
    if kind.endswith("l2norm"):
        summed = jnp.sqrt(jnp.maximum(summed, SQUARE_FLOOR))
    return lambda_softmax / (summed + eps)


def _pool_pieces(pieces, agg_func, lambda_lse, axis):
    """Pools relevances over `axis` across pieces (Eq. 4 / 8).

    `pieces` is a list of `(relevance, mask)`, the mask broadcastable to
    the relevance and 1.0 at valid entries; the pieces differ only along
    `axis` (the region parts of i2t).
    """
    if agg_func in ("mean", "sum"):
        total = sum(jnp.sum(r * m, axis=axis) for r, m in pieces)
        if agg_func == "sum":
            return total
        count = sum(jnp.sum(m, axis=axis) for _, m in pieces)
        return total / jnp.maximum(count, 1.0)
    if agg_func == "max":
        tops = [
            jnp.max(jnp.where(m > 0, r, _LARGE_NEGATIVE), axis=axis) for r, m in pieces
        ]
        return functools.reduce(jnp.maximum, tops)
    # LogSumExp with one shift for all pieces.
    xs = [(jnp.where(m > 0, lambda_lse * r, _LARGE_NEGATIVE), m) for r, m in pieces]
    top = functools.reduce(jnp.maximum, [jnp.max(x, axis=axis) for x, _ in xs])
    top_kept = jnp.expand_dims(top, axis)
    total = sum(jnp.sum(jnp.exp(x - top_kept) * m, axis=axis) for x, m in xs)
    return (jnp.log(jnp.maximum(total, 1e-30)) + top) / lambda_lse


def _kernel(*refs, cross_attn, parts, ti, tc, wp, n_k, k_block, config, precisions):
    """One tile: `ti` images against `tc` captions of `wp` words.

    `refs`, in order: for each region part p, the images' rows `(ti p, d)`,
    then their region masks `(ti p,)`; t2i: for each pair of parts the
    block-diagonal image Gram matrix `(ti p, ti q)`; i2t: for each part the
    region norms `(ti p,)`. Then the captions' words `(tc wp, d)`, their
    mask `(tc wp,)`, the word norms `(tc wp,)` (t2i) or the block-diagonal
    caption Gram matrix `(tc wp, tc wp)` (i2t), and the `(ti, tc)` output.
    """
    n = len(parts)
    v_refs, m_refs = refs[:n], refs[n : 2 * n]
    if cross_attn == "t2i":
        g_refs = refs[2 * n : 2 * n + n * n]
        e_ref, wm_ref, side_ref, out_ref = refs[2 * n + n * n :]
    else:
        vn_refs = refs[2 * n : 3 * n]
        e_ref, wm_ref, side_ref, out_ref = refs[3 * n :]
    bc = tc * wp
    product, gram = precisions
    lam, eps, kind = config["lambda_softmax"], config["eps"], config["raw_feature_norm"]

    # s = V E^T for each region part, d in steps of k_block: (ti p, bc).
    def step(k, accs):
        words = e_ref[:, pl.ds(k * k_block, k_block)]
        return tuple(
            acc
            + pltriton.dot(
                v[:, pl.ds(k * k_block, k_block)],
                words,
                trans_b=True,
                precision=product,
            )
            for acc, v in zip(accs, v_refs)
        )

    zeros = tuple(jnp.zeros((ti * p, bc), jnp.float32) for p in parts)
    s = lax.fori_loop(0, n_k, step, zeros)
    x = (
        [jnp.where(sp > 0, sp, LEAKY_SLOPE * sp) for sp in s]
        if kind.startswith("clipped")
        else s
    )
    region_mask = [m[...][:, None] for m in m_refs]  # (ti p, 1)
    word_mask = wm_ref[...]  # (bc,)

    def per_image(values, p):
        # (ti p, bc) -> (ti, bc): the sum over one image's regions in a part.
        return jnp.sum(values.reshape(ti, p, bc), axis=1)

    def per_caption(values):
        # (rows, bc) -> (rows, tc, 1): the sum over each caption's words.
        return jnp.sum(values.reshape(values.shape[0], tc, wp), axis=2, keepdims=True)

    if cross_attn == "t2i":
        # Eq. 1: normalise across each caption's words; Eq. 2: each word
        # attends over the regions, with the unnormalised weights e.
        e = []
        for xp, mp in zip(x, region_mask):
            scale = _scale(per_caption(_norm_terms(xp, kind)), kind, eps, lam)
            logits = (xp.reshape(-1, tc, wp) * scale).reshape(-1, bc)
            # Padded regions have zero scores, so they add nothing to the
            # sums below; masked, they stay out of Z and its eps floor too.
            e.append(jnp.exp(logits) * mp)
        total = jnp.maximum(sum(per_image(ep, p) for ep, p in zip(e, parts)), 1e-30)
        dot = sum(per_image(ep * sp, p) for ep, sp, p in zip(e, s, parts))
        # e^T G e, G block-diagonal over the tile's images, part by part.
        quad = 0.0
        for a, (ea, pa) in enumerate(zip(e, parts)):
            g_e = sum(
                pltriton.dot(g_refs[a * n + b][...], eb, precision=gram)
                for b, eb in enumerate(e)
            )
            quad = quad + per_image(ea * g_e, pa)
        query_norm = side_ref[...][None, :]  # (1, bc): the words' norms
        relevance = dot / jnp.maximum(
            query_norm * jnp.sqrt(jnp.maximum(quad, 1e-30)), eps * total
        )
        pieces = [(relevance.reshape(ti, tc, wp), word_mask.reshape(1, tc, wp))]
        scores = _pool_pieces(pieces, config["agg_func"], config["lambda_lse"], axis=2)
    else:
        # Eq. 5: normalise across the regions for each word (over all parts).
        summed = sum(per_image(_norm_terms(xp, kind), p) for xp, p in zip(x, parts))
        scale = _scale(summed, kind, eps, lam)[:, None, :]  # (ti, 1, bc)
        # Eq. 6: each region attends over the caption's words.
        gram_words = side_ref[...]  # (bc, bc), block-diagonal caption Gram
        pieces = []
        for xp, sp, mp, vn, p in zip(x, s, region_mask, vn_refs, parts):
            logits = (xp.reshape(ti, p, bc) * scale).reshape(-1, bc)
            ep = jnp.exp(logits) * word_mask[None, :]
            total = jnp.maximum(per_caption(ep), 1e-30)[..., 0]  # (ti p, tc)
            dot = per_caption(ep * sp)[..., 0]
            h_e = pltriton.dot(ep, gram_words, precision=gram)
            quad = per_caption(ep * h_e)[..., 0]
            region_norm = vn[...][:, None]  # (ti p, 1)
            relevance = dot / jnp.maximum(
                region_norm * jnp.sqrt(jnp.maximum(quad, 1e-30)), eps * total
            )
            pieces.append((relevance.reshape(ti, p, tc), mp.reshape(ti, p, 1)))
        scores = _pool_pieces(pieces, config["agg_func"], config["lambda_lse"], axis=1)
    out_ref[...] = scores.astype(out_ref.dtype)


def _block_diagonal(blocks, group):
    """`(n, p, q)` blocks -> `(n p, group q)`: each run of `group` blocks as
    one block-diagonal matrix, the runs stacked."""
    n, p, q = blocks.shape
    grouped = blocks.reshape(n // group, group, p, q)
    diagonal = jnp.einsum("aipq,ij->aipjq", grouped, jnp.eye(group, dtype=blocks.dtype))
    return diagonal.reshape(n * p, group * q)


def check_supported(raw_feature_norm, lambda_softmax):
    """Raises a ValueError unless the kernel computes this configuration."""
    problem = fused_unsupported(raw_feature_norm, lambda_softmax)
    if problem is not None:
        raise ValueError(f"{problem[0].upper()}{problem[1:]}.")


def similarities(
    images,
    captions,
    images_mask=None,
    captions_mask=None,
    *,
    cross_attn="t2i",
    lambda_softmax=9.0,
    agg_func="mean",
    lambda_lse=6.0,
    raw_feature_norm="clipped_l2norm",
    eps=1e-8,
    product_dtype=None,
    tiles=None,
    interpret=None,
    tf32_rounding=None,
):
    """The `(I, C)` SCAN similarity of every image with every caption, fused.

    Computes what `StackedCrossAttention` computes with the same arguments
    (`implementation="pallas"` calls this), in one Pallas kernel.

    Args:
        images: `(I, R, d)` region features.
        captions: `(C, W, d)` word features.
        images_mask: optional `(I, R)`, nonzero at real regions.
        captions_mask: optional `(C, W)`, nonzero at real words.
        cross_attn: `"t2i"` or `"i2t"`, as in `StackedCrossAttention`.
        lambda_softmax: lambda_1, at most 20.
        agg_func: `"mean"`, `"logsumexp"`, `"max"` or `"sum"`.
        lambda_lse: lambda_2 of `"logsumexp"` pooling.
        raw_feature_norm: one of `FUSED_NORMS`.
        eps: added to norms, the floor of cosine denominators.
        product_dtype: `None` (float32) or `"bfloat16"` / `"float16"`
            operands of the one large product, summed in float32.
        tiles: overrides of `DEFAULT_TILES` (`images_per_block`, a power of
            two >= 4; `columns`, the words of a tile, a power of two;
            `k_block`, the features summed per step; `group`, the image
            tiles scored against all captions before the next ones) and
            Triton's `num_warps` and `num_stages`.
        interpret: run in Pallas' interpreter (default: on a CPU, where
            there is no Triton). For tests; it is slow.
        tf32_rounding: round float32 operands of the large product to the
            nearest TF32 value first (default: when compiled for a GPU,
            whose TF32 product would otherwise drop their low bits; see
            `platform.round_to_tf32`).

    Returns:
        A float32 array of shape `(I, C)`.
    """
    check_supported(raw_feature_norm, lambda_softmax)
    tiles = {**DEFAULT_TILES, **(tiles or {})}
    if interpret is None:
        interpret = jax.default_backend() == "cpu"
    n_images, n_regions, dim = images.shape
    n_captions, n_words, _ = captions.shape
    images = images.astype(jnp.float32)
    captions = captions.astype(jnp.float32)
    region_mask = (
        jnp.ones((n_images, n_regions), jnp.float32)
        if images_mask is None
        else (images_mask != 0).astype(jnp.float32)
    )
    word_mask = (
        jnp.ones((n_captions, n_words), jnp.float32)
        if captions_mask is None
        else (captions_mask != 0).astype(jnp.float32)
    )
    # Padded regions and words become zero vectors: zero similarities,
    # which drop out of every norm, as in the portable layer.
    images = images * region_mask[..., None]
    captions = captions * word_mask[..., None]

    parts = region_parts(n_regions)
    ti = tiles["images_per_block"]
    wp = padded_words(n_words)
    tc = max(1, tiles["columns"] // wp)
    bc, k_block = tc * wp, tiles["k_block"]
    n_c = round_up(n_captions, tc)
    group = group_tiles(-(-n_images // ti), tiles["group"])
    n_i = round_up(n_images, ti * group)
    n_d = round_up(dim, k_block)
    images = jnp.pad(
        images, ((0, n_i - n_images), (0, sum(parts) - n_regions), (0, n_d - dim))
    )
    region_mask = jnp.pad(
        region_mask, ((0, n_i - n_images), (0, sum(parts) - n_regions))
    )
    captions = jnp.pad(
        captions, ((0, n_c - n_captions), (0, wp - n_words), (0, n_d - dim))
    )
    word_mask = jnp.pad(word_mask, ((0, n_c - n_captions), (0, wp - n_words)))

    operand = jnp.dtype(product_dtype or jnp.float32)
    if tf32_rounding is None:
        tf32_rounding = not interpret
    if operand == jnp.float32 and tf32_rounding:
        images_operand = round_to_tf32(images)
        captions_operand = round_to_tf32(captions)
    else:
        images_operand, captions_operand = images, captions
    starts = [sum(parts[:j]) for j in range(len(parts))]
    split = [slice(start, start + p) for start, p in zip(starts, parts)]
    # A 1-D grid walked in groups: `group` image tiles against every
    # caption tile, then the next group. The programs running at once then
    # share a few image and caption tiles, which stay in the L2 cache.
    n_b = n_c // tc

    def image_block(i):
        return (i // (group * n_b)) * group + i % group

    def caption_block(i):
        return (i // group) % n_b

    def image_rows(i):
        return image_block(i), 0

    def caption_rows(i):
        return caption_block(i), 0

    def image_vector(i):
        return (image_block(i),)

    def caption_vector(i):
        return (caption_block(i),)

    inputs = [
        images_operand[:, rows].reshape(-1, n_d).astype(operand) for rows in split
    ]
    specs = [pl.BlockSpec((ti * p, n_d), image_rows) for p in parts]
    inputs += [region_mask[:, rows].reshape(-1) for rows in split]
    specs += [pl.BlockSpec((ti * p,), image_vector) for p in parts]
    highest = lax.Precision.HIGHEST
    if cross_attn == "t2i":
        gram = jnp.einsum("ird,isd->irs", images, images, precision=highest)
        for ra, pa in zip(split, parts):
            for rb, pb in zip(split, parts):
                inputs.append(_block_diagonal(gram[:, ra, rb], ti))
                specs.append(pl.BlockSpec((ti * pa, ti * pb), image_rows))
    else:
        inputs += [safe_norm(images[:, rows]).reshape(-1) for rows in split]
        specs += [pl.BlockSpec((ti * p,), image_vector) for p in parts]
    inputs += [captions_operand.reshape(-1, n_d).astype(operand), word_mask.reshape(-1)]
    specs += [
        pl.BlockSpec((bc, n_d), caption_rows),
        pl.BlockSpec((bc,), caption_vector),
    ]
    if cross_attn == "t2i":
        inputs.append(safe_norm(captions).reshape(-1))
        specs.append(pl.BlockSpec((bc,), caption_vector))
    else:
        gram = jnp.einsum("cwd,cvd->cwv", captions, captions, precision=highest)
        inputs.append(_block_diagonal(gram, tc))
        specs.append(pl.BlockSpec((bc, bc), caption_rows))

    if interpret:
        precisions, compiler_params = (None, None), None
    else:
        # The big product at the operands' usual rate (TF32 for float32, as
        # XLA's default on these GPUs). With float32 operands, the small
        # Gram products take three TF32 passes, near float32: in one pass,
        # Triton truncates to TF32 and the error reaches 7e-4
        # (benchmarks/tf32_error.py). With 16-bit operands, one pass is well
        # within their 3e-3, and saves registers: 155 instead of 245 at the
        # default tile (benchmarks/kernel_resources.py).
        gram = (
            lax.DotAlgorithmPreset.TF32_TF32_F32_X3
            if operand == jnp.float32
            else lax.Precision.DEFAULT
        )
        precisions = (lax.Precision.DEFAULT, gram)
        compiler_params = pltriton.CompilerParams(
            num_warps=tiles["num_warps"], num_stages=tiles["num_stages"]
        )
    config = {
        "lambda_softmax": float(lambda_softmax),
        "eps": float(eps),
        "raw_feature_norm": raw_feature_norm,
        "agg_func": agg_func,
        "lambda_lse": float(lambda_lse),
    }
    kernel = functools.partial(
        _kernel,
        cross_attn=cross_attn,
        parts=parts,
        ti=ti,
        tc=tc,
        wp=wp,
        n_k=n_d // k_block,
        k_block=k_block,
        config=config,
        precisions=precisions,
    )
    scores = pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((n_i, n_c), jnp.float32),
        grid=(n_i // ti * n_b,),
        in_specs=specs,
        out_specs=pl.BlockSpec((ti, tc), lambda i: (image_block(i), caption_block(i))),
        compiler_params=compiler_params,
        interpret=interpret,
    )(*inputs)
    return scores[:n_images, :n_captions]


def with_portable_gradients(fused, portable):
    """`fused(images, captions, images_mask, captions_mask)` whose gradients
    are those of `portable`, a function of the same arguments computing the
    same scores (Pallas kernels have no automatic derivative). The masks
    are float arrays and get zero gradients."""

    @jax.custom_vjp
    def scores(images, captions, images_mask, captions_mask):
        return fused(images, captions, images_mask, captions_mask)

    def forward(*args):
        return scores(*args), args

    def backward(args, grad):
        images, captions, images_mask, captions_mask = args
        _, pullback = jax.vjp(
            lambda i, c: portable(i, c, images_mask, captions_mask), images, captions
        )
        return (
            *pullback(grad),
            jnp.zeros_like(images_mask),
            jnp.zeros_like(captions_mask),
        )

    scores.defvjp(forward, backward)
    return scores
