"""Stacked Cross Attention (Lee et al., ECCV 2018, section 3).

Reading order follows the paper: the region-word similarities s, their
normalisation (Eq. 1 / 5), the attention softmax with temperature
`lambda_softmax` (Eq. 2 / 6), the relevance of each word or region to its
attended vector (Eq. 3 / 7) and the pooling into one image-caption score
(Eq. 4 / 8, AVG or LSE with `lambda_lse`).

Shapes: I images with R regions, C captions with W words, d features.

The paper's literal form builds one attended d-vector per (image, caption,
word) triple. This layer never does. With alpha the attention weights and
G = V V^T the Gram matrix of an image's regions:

    e_w . a_w   = sum_r alpha[w, r] s[r, w]
    ||a_w||^2   = alpha_w^T G alpha_w

so the only d-sized work is one product of all words against all regions;
everything after it works on (R x W) score tiles. i2t is the mirror image,
with the Gram matrix of each caption's words.
"""

import keras
from keras import ops

from scan_keras.layers.norms import (
    RAW_FEATURE_NORMS,
    large_negative,
    leaky_clip,
    normalize_raw_similarity,
    safe_norm,
)
from scan_keras.layers.validation import (
    check_choice,
    check_finite,
    check_mask,
    check_rank,
)

CROSS_ATTNS = ("t2i", "i2t")
AGG_FUNCS = ("mean", "logsumexp", "max", "sum")
PRODUCT_DTYPES = ("float32", "bfloat16", "float16")
KERNELS = ("portable", "pallas")

# Automatic chunking keeps each (images, regions, captions, words) tensor
# under this many elements. On a GPU, 2**25 (128 MiB in float32, a few such
# tensors alive at once) keeps the device busy. On a CPU the tail after the
# product is bound by memory traffic: 2**20 (4 MiB) stays in the caches
# (2 cores, 100 images x 500 captions: 1.2-1.4x the time of the product
# alone, against 2.0-2.3x unchunked; docs/performance.md).
_AUTO_CHUNK_ELEMENTS = {"accelerator": 2**25, "cpu": 2**20}
# ... but never fewer captions than this in a chunk: the product's width is
# chunk x words, and a thin product wastes most of the arithmetic units.
_MIN_AUTO_CHUNK = 16
# When even that many captions against all images exceed the budget (1000
# images on a CPU), the images are tiled too, with this many captions a
# chunk: 1000 images x 480 captions (t2i, JAX) ran at 1.03x the product's
# time in tiles of 72 images x 32 captions, 1.1x for 50 x 48 or 100 x 24,
# and 1.5x untiled (1000 x 16).
_TILED_CHUNK = 32
# Compiled versions of the chunk scoring that torch keeps (`torch_compile`).
_TORCH_RECOMPILE_LIMIT = 64


def _on_accelerator():
    """Whether the backend computes on a GPU (or another accelerator)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    if backend == "torch":
        # Where Keras puts new tensors: KERAS_TORCH_DEVICE, then MPS, CUDA
        # or XPU, and `keras.device` scopes.
        return ops.zeros(()).device.type != "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_logical_devices("GPU"))
    return False


# Normalisations that leave every similarity in [-1, 1]. With them and a
# lambda_1 up to 20, exp(lambda_1 s) needs no shift by the maximum: e and
# e^T G e stay far inside float32's range.
_UNIT_BOUNDED_NORMS = (
    "clipped_l2norm",
    "l2norm",
    "l1norm",
    "clipped_l1norm",
    "softmax",
)
_LAMBDA_WITHOUT_SHIFT = 20.0


def _compiled_loop():
    """Whether chunks run as one compiled loop body (`ops.map`): on JAX.

    TensorFlow's `map_fn` costs milliseconds a step in eager mode and, under
    XLA, measured slower than the unrolled loop; torch has no compiled map.
    """
    return keras.backend.backend() == "jax"


def _rows(arrays, start, stop):
    """Rows `start:stop` of each array of a tuple; None stays None."""
    return tuple(None if x is None else x[start:stop] for x in arrays)


def _balanced(n, block):
    """Evens out blocks: n rows in as many blocks as `block` needs, equal.

    1000 images in blocks of at most 101 become 10 blocks of 100, not 9 of
    101 and a remainder of 91 (one more shape to compile).
    """
    n_blocks = -(-n // block)
    return -(-n // n_blocks)


def _map_rows(fn, arrays, block, axis):
    """Applies `fn` to `block` rows at a time of a tuple of arrays.

    `fn` returns a tensor, or a tuple of tensors, whose `axis` runs over
    the rows it was given; the results are joined along that axis. On JAX
    one body is compiled for the whole blocks and looped over (`ops.map`);
    the remaining rows are one more call, not a padded block (padding
    measured 10% slower on CPU). Other backends loop in Python (see
    `_compiled_loop`). A `block` of None, or of all the rows, is one call.
    """
    n = next(x for x in arrays if x is not None).shape[0]
    if block is None or block >= n:
        return fn(arrays)
    if not _compiled_loop():
        parts = [
            fn(_rows(arrays, start, start + block)) for start in range(0, n, block)
        ]
    else:
        n_whole = (n // block) * block
        stacked = ops.map(
            fn,
            tuple(
                None if x is None else ops.reshape(x, (-1, block) + tuple(x.shape[1:]))
                for x in _rows(arrays, 0, n_whole)
            ),
        )

        def unblock(x):
            # (n_blocks, ..., block, ...) -> (..., n_blocks * block, ...)
            x = ops.moveaxis(x, 0, axis)
            shape = tuple(x.shape)
            return ops.reshape(x, shape[:axis] + (n_whole,) + shape[axis + 2 :])

        parts = [keras.tree.map_structure(unblock, stacked)]
        if n_whole < n:
            parts.append(fn(_rows(arrays, n_whole, n)))
    if len(parts) == 1:
        return parts[0]
    return keras.tree.map_structure(
        lambda *xs: ops.concatenate(xs, axis=axis), *parts
    )


# TensorFlow's XLA rewrites a sum over more than 32 entries into a windowed
# sum followed by a second sum, and then no longer fuses what is summed (a
# product, a square) into it: each sum over the 36 regions wrote the large
# tensor out once more. Summed in pieces of at most 32, each stays one
# fused pass (t2i, 100 images x 500 captions on a CPU: 1.3-1.5x the
# product's time -> 1.2x). JAX's XLA fuses these sums already, and
# measured slower in pieces.
_SUM_PIECE = 32


def _sums_in_pieces():
    # Compiled TensorFlow only: run eagerly, the pieces are just more
    # operations (100 images x 500 captions: 298 ms against 252 ms).
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return not tf.executing_eagerly()


def _sum(x, axis, keepdims=False):
    """`ops.sum` over one axis; in pieces under TensorFlow's XLA (see above)."""
    n = x.shape[axis]
    if not _sums_in_pieces() or n is None or n <= _SUM_PIECE:
        return ops.sum(x, axis=axis, keepdims=keepdims)
    axis = axis % len(x.shape)
    n_pieces = -(-n // _SUM_PIECE)
    size = -(-n // n_pieces)
    total = None
    for start in range(0, n, size):
        piece = x[(slice(None),) * axis + (slice(start, start + size),)]
        part = ops.sum(piece, axis=axis, keepdims=keepdims)
        total = part if total is None else total + part
    return total


def _i2t_layout():
    """The layout of i2t's large tensor: `"cwir"`, or `"ircw"` under XLA on
    TensorFlow's CPU.

    `(C, W, I, R)` batches the caption Gram product over the leading axis,
    so the large tensor is never transposed. TensorFlow's XLA on a CPU runs
    the `(C W, d) x (d, I R)` product about 7% slower than `(I R, d) x
    (d, C W)` (7.3 against 6.8 ms a chunk, 100 images), which costs more
    there than the transposes it saves: 1.28x the floor against 1.32x
    (medians of 13 and 7 runs, 100 images). Eagerly, the transposes cost
    more.
    """
    if _sums_in_pieces() and not _on_accelerator():
        return "ircw"
    return "cwir"


# On GPUs JAX multiplies float32 matrices in TF32 (10 mantissa bits) by
# default, and the hardware, or the code feeding it, may simply drop the
# other 13 bits. Truncated, the large product lowers every score by about
# 5e-4 relative; against Gram products in float32 that alone is 7e-4
# relative error in the similarities (benchmarks/tf32_error.py), over the
# 1e-4 a float32 result should meet. So on JAX accelerators the operands are
# rounded to the nearest TF32 value first (then dropping bits is exact),
# and the small Gram products, bound by memory traffic rather than
# arithmetic, run in full float32: 6e-5 (t2i) and 2e-5 (i2t).
_TF32_MANTISSA_BITS = 10


def _tf32_products():
    """Whether float32 products run in TF32: JAX on an accelerator, at
    JAX's default matmul precision."""
    if keras.backend.backend() != "jax" or not _on_accelerator():
        return False
    import jax

    return jax.config.jax_default_matmul_precision not in ("highest", "float32")


def round_to_tf32(x):
    """`x` (float32) rounded to the nearest value with TF32's 10 mantissa
    bits (JAX)."""
    import jax

    return jax.lax.reduce_precision(x, exponent_bits=8, mantissa_bits=_TF32_MANTISSA_BITS)


def _gram_einsum(equation, *operands):
    """A small Gram product, in full float32 where products default to TF32."""
    if not _tf32_products():
        return ops.einsum(equation, *operands)
    import jax

    return jax.numpy.einsum(equation, *operands, precision="highest")


def _gram_matrix(x):
    """x x^T over the last two axes (an image's regions, a caption's words),
    in full float32 where products default to TF32."""
    if not _tf32_products():
        # As before the TF32 handling: an einsum sums in another order on
        # a CPU, and the demo's training would drift from its documented
        # figures.
        return ops.matmul(x, ops.swapaxes(x, -1, -2))
    return _gram_einsum("...rd,...sd->...rs", x, x)


def product_operand(x, product_dtype=None):
    """An operand of the one large product: cast to `product_dtype` when
    given, and rounded to the nearest TF32 value where float32 products
    run in TF32 (see `_tf32_products`)."""
    if product_dtype is not None:
        x = ops.cast(x, product_dtype)
    if keras.backend.standardize_dtype(x.dtype) == "float32" and _tf32_products():
        x = round_to_tf32(x)
    return x


def _region_word_scores(images, captions, layout, product_dtype=None):
    """s = v_ir . e_cw in float32: the one d-sized product.

    `layout` is `"ircw"`, with `images` of shape `(I, R, d)`, or `"cwir"`,
    with `images` transposed to `(d, I, R)`: the natural output of one
    matrix product each way, so neither transposes the result. (XLA on a
    CPU transposes a `(I, R, d)` right operand at every call; transposed
    once per image tile, it is not copied per chunk of captions.)
    `images` has been through `product_operand` already, once for all
    chunks; `captions` go through it here. The operands are multiplied in
    `product_dtype` when given, else in their own dtype. JAX returns 16-bit
    products straight from its float32 accumulator; other backends round
    them to 16 bits before the cast.
    """
    captions = product_operand(captions, product_dtype)
    operands = (images, captions) if layout == "ircw" else (captions, images)
    inputs = "ird,cwd" if layout == "ircw" else "cwd,dir"
    equation = f"{inputs}->{layout}"
    dtype = keras.backend.standardize_dtype(images.dtype)
    if dtype in ("float16", "bfloat16") and keras.backend.backend() == "jax":
        import jax.numpy as jnp

        return jnp.einsum(equation, *operands, preferred_element_type="float32")
    return ops.cast(ops.einsum(equation, *operands), "float32")


def pool(relevance, agg_func, lambda_lse=6.0, mask=None, axis=-1):
    """Pools relevance scores into one similarity (Eq. 4 and 8).

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


@keras.saving.register_keras_serializable(package="scan_keras")
class StackedCrossAttention(keras.layers.Layer):
    """Stacked Cross Attention: the similarity of every image with every caption.

    From *Stacked Cross Attention for Image-Text Matching* (Lee et al., ECCV
    2018). Given encoded image regions v_r and caption words e_w, it scores
    each image-caption pair by letting words attend over regions (`"t2i"`,
    the paper's Text-Image formulation) or regions attend over words
    (`"i2t"`, Image-Text):

    1. s[r, w] = v_r . e_w, normalised across the words of the caption for
       each region (t2i) or across the regions for each word (i2t) with
       `raw_feature_norm` (the paper: clipped l2 norm).
    2. alpha = softmax of `lambda_softmax * s` over the regions (t2i) or
       the words (i2t).
    3. The attended vector a = sum alpha v (t2i) or sum alpha e (i2t), and
       the relevance R = cosine(e_w, a_w) (t2i) or cosine(v_r, a_r) (i2t).
    4. R pooled over the caption's words (t2i) or the image's regions
       (i2t) by `agg_func`.

    The attended vectors are never built: step 3 is computed from the
    scores and the per-image (per-caption) Gram matrix, so the only
    d-sized work is one product of all words with all regions. Captions
    are processed in chunks to bound memory on whole test sets.

    Shapes: I images of R regions, C captions of W words, d features.

    Args:
        cross_attn: `"t2i"` (each word attends over the regions) or
            `"i2t"` (each region attends over the words).
        lambda_softmax: inverse temperature lambda_1 of the attention
            softmax. The paper uses 9 for t2i and 4 for i2t.
        agg_func: pooling of the relevances: `"mean"` (AVG),
            `"logsumexp"` (LSE), `"max"` or `"sum"`.
        lambda_lse: lambda_2 of LSE pooling (used by `"logsumexp"` only).
        raw_feature_norm: normalisation of the raw similarities:
            `"clipped_l2norm"` (the paper's), `"l2norm"`, `"l1norm"`,
            `"clipped_l1norm"`, `"softmax"`, `"clipped"` or `"no_norm"`.
        eps: added to norms and used as the floor of cosine denominators.
        chunk_size: captions scored at once, against all images. `None`
            picks the tiles itself: each intermediate tensor stays near
            2**25 elements on a GPU and 2**20 on a CPU (where it then stays
            in the caches), with at least 16 captions a chunk, and the
            images are tiled as well when that is still too large. Chunking
            needs the numbers of images and captions to be known when the
            layer is called (always true in eager mode and under JAX).
        product_dtype: dtype of the operands of the one product of all
            regions with all words, the bulk of the arithmetic: `None` (the
            layer's compute dtype), `"float32"`, `"bfloat16"` or
            `"float16"`. 16-bit operands halve the product's memory traffic
            and use faster matrix units; what follows the product stays in
            float32 (see `benchmarks/similarity.py` for the speed and the
            error).
        torch_compile: on the PyTorch backend, score each chunk through
            `torch.compile`, which fuses the operations after the product
            (on a CPU, 1.25x the product's time -> 1.1x) at the price of a
            compilation of a few seconds per chunk shape. Other backends
            compile whole functions already (`jax.jit`, XLA) and ignore it.
        kernel: `"portable"` (`keras.ops`, every backend) or `"pallas"`:
            on JAX, one fused Pallas (Triton) kernel per tile of images x
            captions, which never writes the region-word scores to memory
            (`pallas_attention.py`). It computes the l1 and l2 norms with
            `lambda_softmax <= 20` and captions of up to 64 words;
            gradients, the attention weights (`return_attention_scores=True`)
            and longer captions take the portable path.
            Meant for GPUs; on a CPU it runs in Pallas' slow interpreter.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        images: encoded regions, shape `(I, R, d)`.
        captions: encoded words, shape `(C, W, d)`.
        images_mask: optional boolean `(I, R)`, True for real regions.
        captions_mask: optional boolean `(C, W)`, True for real words.
            Filled in automatically from a Keras mask, such as the one
            `Embedding(mask_zero=True)` or `CaptionEncoder` attaches.
        return_attention_scores: also return the attention weights.

    Returns:
        The similarity matrix, shape `(I, C)`. With
        `return_attention_scores=True`, a tuple `(similarities, attention)`
        where `attention` has shape `(I, C, W, R)` for t2i (each word's
        weights over the regions) and `(I, C, R, W)` for i2t (each region's
        weights over the words), zero at padded positions.

    Example:

    ```python
    import numpy as np
    from scan_keras.layers import StackedCrossAttention

    images = np.random.normal(size=(2, 36, 64)).astype("float32")
    captions = np.random.normal(size=(3, 12, 64)).astype("float32")
    captions_mask = np.arange(12)[None, :] < np.array([[12], [7], [9]])
    layer = StackedCrossAttention(cross_attn="t2i", lambda_softmax=9.0)
    sims = layer(images, captions, captions_mask=captions_mask)
    sims.shape  # (2, 3): every image against every caption
    ```
    """

    def __init__(
        self,
        cross_attn: str = "t2i",
        lambda_softmax: float = 9.0,
        agg_func: str = "mean",
        lambda_lse: float = 6.0,
        raw_feature_norm: str = "clipped_l2norm",
        eps: float = 1e-8,
        chunk_size: int | None = None,
        product_dtype: str | None = None,
        torch_compile: bool = False,
        kernel: str = "portable",
        **kwargs,
    ):
        check_choice("cross_attn", cross_attn, CROSS_ATTNS)
        check_choice("agg_func", agg_func, AGG_FUNCS)
        check_choice("raw_feature_norm", raw_feature_norm, RAW_FEATURE_NORMS)
        for name, value in (
            ("lambda_softmax", lambda_softmax),
            ("lambda_lse", lambda_lse),
            ("eps", eps),
        ):
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(
                    f"Expected `{name}` to be a positive number. "
                    f"Received: {name}={value!r}"
                )
        if chunk_size is not None and (
            not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(
                "Expected `chunk_size` to be a positive integer or None. "
                f"Received: chunk_size={chunk_size!r}"
            )
        if product_dtype is not None:
            check_choice("product_dtype", product_dtype, PRODUCT_DTYPES)
        if not isinstance(torch_compile, bool):
            raise ValueError(
                "Expected `torch_compile` to be True or False. "
                f"Received: torch_compile={torch_compile!r}"
            )
        check_choice("kernel", kernel, KERNELS)
        if kernel == "pallas":
            if keras.backend.backend() != "jax":
                raise ValueError(
                    "kernel='pallas' needs the JAX backend. "
                    f"Received: kernel={kernel!r} with the "
                    f"{keras.backend.backend()} backend"
                )
            try:
                from jax.experimental.pallas import triton  # noqa: F401

                from scan_keras.layers import pallas_attention
            except ImportError as error:
                raise ValueError(
                    "kernel='pallas' needs a JAX with Pallas' Triton backend "
                    f"(jax.experimental.pallas.triton): {error}"
                ) from error
            pallas_attention.check_supported(raw_feature_norm, lambda_softmax)
        super().__init__(**kwargs)
        self.cross_attn = cross_attn
        self.lambda_softmax = float(lambda_softmax)
        self.agg_func = agg_func
        self.lambda_lse = float(lambda_lse)
        self.raw_feature_norm = raw_feature_norm
        self.eps = float(eps)
        self.chunk_size = chunk_size
        self.product_dtype = product_dtype
        self.torch_compile = torch_compile
        self.kernel = kernel

    def build(self, images_shape, captions_shape):
        self._check_shapes(images_shape, captions_shape)
        self.built = True

    def _check_shapes(self, images_shape, captions_shape):
        check_rank(images_shape, 3, "images", "(n_images, n_regions, d)")
        check_rank(captions_shape, 3, "captions", "(n_captions, n_words, d)")
        d_img, d_cap = images_shape[-1], captions_shape[-1]
        if d_img is not None and d_cap is not None and d_img != d_cap:
            raise ValueError(
                "`images` and `captions` must share their feature size d. "
                f"Received: images.shape={tuple(images_shape)}, "
                f"captions.shape={tuple(captions_shape)}"
            )

    def _tiles(self, images_shape, captions_shape):
        """Images and captions scored at once: `(image_block, chunk)`.

        None means all of them (or sizes unknown when tracing).
        """
        n_images, n_regions = images_shape[0], images_shape[1]
        n_captions, n_words = captions_shape[0], captions_shape[1]
        if n_captions is None:
            return None, None
        if self.chunk_size is not None:
            return None, self.chunk_size
        if None in (n_images, n_regions, n_words):
            return None, None
        budget = _AUTO_CHUNK_ELEMENTS["accelerator" if _on_accelerator() else "cpu"]
        per_caption = max(1, n_images * n_regions * n_words)
        if _MIN_AUTO_CHUNK * per_caption <= budget:
            chunk = _balanced(n_captions, budget // per_caption)
            return None, chunk
        # A 5K test set scored one caption at a time ran for minutes: tile
        # the images instead of thinning the product.
        chunk = _balanced(n_captions, min(n_captions, _TILED_CHUNK))
        image_block = max(1, budget // (n_regions * n_words * chunk))
        return _balanced(n_images, image_block), chunk

    def call(
        self,
        images,
        captions,
        images_mask=None,
        captions_mask=None,
        return_attention_scores=False,
    ):
        self._check_shapes(images.shape, captions.shape)
        check_finite(images, "images")
        check_finite(captions, "captions")
        if images_mask is not None:
            check_mask(images_mask, images.shape, "images_mask")
            images_mask = ops.cast(images_mask, "bool")
        if captions_mask is not None:
            check_mask(captions_mask, captions.shape, "captions_mask")
            captions_mask = ops.cast(captions_mask, "bool")
        if self.kernel == "pallas" and not return_attention_scores:
            from scan_keras.layers import pallas_attention

            # Captions over 64 words would widen the kernel's tiles past
            # an H100's shared memory: they (rare) take the portable path.
            n_words = captions.shape[1]
            columns = pallas_attention.DEFAULT_TILES["columns"]
            if pallas_attention.padded_words(n_words) <= columns:
                return self._fused(images, captions, images_mask, captions_mask)
        return self._portable(
            images, captions, images_mask, captions_mask, return_attention_scores
        )

    def _fused(self, images, captions, images_mask, captions_mask):
        """The scores from the fused Pallas kernel, with the portable path's
        gradients."""
        from scan_keras.layers import pallas_attention

        # As in the portable path, a 16-bit compute dtype (a mixed
        # precision policy) is the product's unless `product_dtype` says.
        product_dtype = self.product_dtype
        dtype = keras.backend.standardize_dtype(images.dtype)
        if product_dtype is None and dtype in ("float16", "bfloat16"):
            product_dtype = dtype

        def mask(m, x):
            if m is None:
                return ops.ones(x.shape[:2], "float32")
            return ops.cast(m, "float32")

        def fused(images, captions, images_mask, captions_mask):
            return pallas_attention.similarities(
                images,
                captions,
                images_mask,
                captions_mask,
                cross_attn=self.cross_attn,
                lambda_softmax=self.lambda_softmax,
                agg_func=self.agg_func,
                lambda_lse=self.lambda_lse,
                raw_feature_norm=self.raw_feature_norm,
                eps=self.eps,
                product_dtype=product_dtype,
            )

        def portable(images, captions, images_mask, captions_mask):
            return self._portable(
                images, captions, images_mask > 0, captions_mask > 0, False
            )

        scores = pallas_attention.with_portable_gradients(fused, portable)(
            images, captions, mask(images_mask, images), mask(captions_mask, captions)
        )
        return ops.cast(scores, self.compute_dtype)

    def _portable(
        self, images, captions, images_mask, captions_mask, return_attention_scores
    ):
        """The scores (and attention weights) in `keras.ops`, by chunks."""
        if images_mask is not None:
            # Padded regions become zero vectors: zero similarities, so
            # they drop out of the norms of Eq. 5 (see `_score`).
            images = images * ops.cast(images_mask, images.dtype)[..., None]
        # What depends on the images alone is computed once, not per chunk.
        images_full = ops.cast(images, "float32")
        if self.cross_attn == "t2i":
            image_side = _gram_matrix(images_full)
        else:
            image_side = safe_norm(images_full, axis=-1)

        # Cast (and rounded) once, not once per chunk of captions.
        images = product_operand(images, self.product_dtype)
        image_block, chunk = self._tiles(images.shape, captions.shape)
        score = self._chunk_scorer()

        def score_images(image_tile):
            images, images_mask, image_side = image_tile
            if self.cross_attn == "i2t" and _i2t_layout() == "cwir":
                # The product's right operand, transposed once per tile.
                images = ops.transpose(images, (2, 0, 1))

            def score_chunk(caption_tile):
                caps, caps_mask = caption_tile
                scores, (weights, total) = score(
                    images, caps, images_mask, caps_mask, image_side
                )
                if not return_attention_scores:
                    return scores
                attention = self._attention(weights, total, images_mask, caps_mask)
                return scores, attention

            return _map_rows(score_chunk, (captions, captions_mask), chunk, axis=1)

        outputs = _map_rows(
            score_images, (images, images_mask, image_side), image_block, axis=0
        )
        outputs = keras.tree.map_structure(
            lambda x: ops.cast(x, self.compute_dtype), outputs
        )
        return outputs

    def _chunk_scorer(self):
        """`_score`, or `_score` through `torch.compile` (`torch_compile`).

        Only the chunk is compiled, not the loop over chunks, which
        `torch.compile` would unroll: one compilation per tile shape (whole
        tiles and the remainders), however many tiles there are.
        """
        if not self.torch_compile or keras.backend.backend() != "torch":
            return self._score
        scorer = self.__dict__.get("_compiled_score")
        if scorer is None:
            import torch

            # Fixed shapes: code for dynamic ones compiled 3-4x slower and
            # ran 10% slower (100 images x 500 captions, CPU).
            compiled = torch.compile(self._score, dynamic=False)
            # torch keeps at most 8 compiled versions of one function and
            # runs it uncompiled beyond them, and every layer shares
            # `_score`: four layers with tiles and remainders on both axes
            # (4 shapes each) would fall back without a word.
            limit = (
                "recompile_limit"
                if hasattr(torch._dynamo.config, "recompile_limit")
                else "cache_size_limit"
            )

            def scorer(*args):
                with torch._dynamo.config.patch({limit: _TORCH_RECOMPILE_LIMIT}):
                    return compiled(*args)

            # Set past Keras' attribute tracking: nothing to save or walk.
            object.__setattr__(self, "_compiled_score", scorer)
        return scorer

    def _score(self, images, captions, images_mask, captions_mask, image_side):
        """Scores all images against one chunk of captions.

        `images` is `(I, R, d)`, or `(d, I, R)` for i2t in its usual
        layout (see `_region_word_scores`); its padded regions are already
        zero.
        `image_side` is the images' Gram matrix (t2i) or region norms (i2t).
        Returns the `(I, C)` scores and the attention weights.

        The large tensors are laid out `(I, R, C, W)` for t2i and
        `(C, W, I, R)` for i2t: both are the natural output of the one
        product, and in each the second small matrix product (the Gram
        matrix of the images for t2i, of the captions for i2t) batches over
        the leading axis, so the large tensor is never transposed. The one
        exception is i2t under XLA on TensorFlow's CPU, laid out like t2i
        (see `_i2t_layout`).
        """
        i2t_layout = _i2t_layout()
        if captions_mask is not None:
            # Zero features make zero similarities: padded words then drop
            # out of the norms of Eq. 1 without masking the large tensor.
            captions = captions * ops.cast(captions_mask, captions.dtype)[..., None]
        if self.cross_attn == "t2i":
            s = _region_word_scores(images, captions, "ircw", self.product_dtype)
            region_mask = None if images_mask is None else images_mask[:, :, None, None]
            word_mask = None if captions_mask is None else captions_mask[None, None]
            # Normalise across the words for each region, then each word
            # attends over the regions (axis 1).
            logits = self._logits(s, axis=-1, mask=word_mask)
            weights, total = self._unnormalised_softmax(logits, 1, region_mask)
            # With e the weights before their sum Z: alpha = e / Z, so
            # e_w . a_w = (sum_r e s) / Z and ||a_w||^2 = e^T G e / Z^2.
            dot = _sum(weights * s, axis=1)  # (I, C, W)
            g_e = _gram_einsum("irs,iscw->ircw", image_side, weights)
            quad = _sum(weights * g_e, axis=1)
            query_norm = safe_norm(ops.cast(captions, "float32"), axis=-1)[None]
            pool_mask = None if captions_mask is None else captions_mask[None]
            pool_axis = -1
        else:
            s = _region_word_scores(images, captions, i2t_layout, self.product_dtype)
            if i2t_layout == "cwir":
                # s is (C, W, I, R): regions on the last axis, words on axis 1.
                region_axis, word_axis, pool_axis = -1, 1, -1
                region_mask = None if images_mask is None else images_mask[None, None]
                word_mask = None if captions_mask is None else captions_mask[:, :, None, None]
                pool_mask = None if images_mask is None else images_mask[None]
                query_norm = image_side[None]  # (1, I, R)
                gram_product = "cvw,cwir->cvir"
            else:
                # s is (I, R, C, W), as for t2i: regions on axis 1, words last.
                region_axis, word_axis, pool_axis = 1, 3, 1
                region_mask = None if images_mask is None else images_mask[:, :, None, None]
                word_mask = None if captions_mask is None else captions_mask[None, None]
                pool_mask = None if images_mask is None else images_mask[:, :, None]
                query_norm = image_side[:, :, None]  # (I, R, 1)
                gram_product = "cvw,ircw->ircv"
            # Normalise across the regions for each word, then each region
            # attends over the caption's words.
            logits = self._logits(s, axis=region_axis, mask=region_mask)
            weights, total = self._unnormalised_softmax(logits, word_axis, word_mask)
            dot = _sum(weights * s, axis=word_axis)  # (C, I, R) or (I, R, C)
            # H = E E^T, each caption's Gram matrix (C, W, W).
            captions = ops.cast(captions, "float32")
            gram = _gram_matrix(captions)
            h_e = _gram_einsum(gram_product, gram, weights)
            quad = _sum(weights * h_e, axis=word_axis)

        # Eq. 3 / 7, cos = x.y / max(||x|| ||y||, eps), with both sides
        # multiplied by Z: (dot / Z) / max(|q| sqrt(quad) / Z, eps).
        relevance = dot / ops.maximum(
            query_norm * ops.sqrt(ops.maximum(quad, 1e-30)), self.eps * total
        )
        # Pooled over the words (t2i) or regions (i2t).
        scores = pool(
            relevance, self.agg_func, self.lambda_lse, mask=pool_mask, axis=pool_axis
        )
        if self.cross_attn == "i2t" and pool_axis == -1:
            scores = ops.transpose(scores)  # (C, I) -> (I, C)
        return scores, (weights, total)

    def _logits(self, s, axis, mask):
        """lambda_1 times the normalised similarities (Eq. 1 / 5).

        Padded entries of `s` are zero, so they add nothing to an l1 or l2
        norm; those norms fold lambda_1 into the small tensor of inverse
        norms instead of scaling the large one.
        """
        kind = self.raw_feature_norm
        if not kind.endswith(("l2norm", "l1norm")):
            return self.lambda_softmax * normalize_raw_similarity(
                s, kind, axis=axis, eps=self.eps, mask=mask
            )
        if kind.startswith("clipped"):
            s = leaky_clip(s)
        if kind.endswith("l2norm"):
            norm = safe_norm(s, axis=axis, keepdims=True, reduce_sum=_sum)
        else:
            norm = _sum(ops.abs(s), axis=axis, keepdims=True)
        return s * (self.lambda_softmax / (norm + self.eps))

    def _unnormalised_softmax(self, logits, axis, mask):
        """exp(logits) along `axis`, zero where masked, and its sum.

        The division by the sum is left to the caller, which applies it to
        the (I, C, W) or (I, R, C) results rather than to the large tensor.
        """
        if self._bounded_logits():
            # |logits| <= lambda_1 <= 20: exp cannot overflow, and the
            # usual subtraction of the maximum (a reduction and a pass over
            # the large tensor) changes nothing.
            weights = ops.exp(logits)
            if mask is not None:
                weights = weights * ops.cast(mask, weights.dtype)
        else:
            if mask is not None:
                # Masked before the shift: exp(0 - max) could overflow.
                logits = ops.where(mask, logits, large_negative(logits.dtype))
            top = ops.max(logits, axis=axis, keepdims=True)
            weights = ops.exp(logits - ops.stop_gradient(top))
        total = ops.maximum(_sum(weights, axis=axis), 1e-30)
        return weights, total

    def _bounded_logits(self):
        # These norms put every normalised similarity in [-1, 1].
        bounded = self.raw_feature_norm in _UNIT_BOUNDED_NORMS
        return bounded and self.lambda_softmax <= _LAMBDA_WITHOUT_SHIFT

    def _attention(self, weights, total, images_mask, captions_mask):
        """The attention weights as reported: normalised, zero at padding.

        `(I, C, W, R)` for t2i and `(I, C, R, W)` for i2t.
        """
        if self.cross_attn == "i2t" and _i2t_layout() == "ircw":
            attention = weights / total[..., None]  # (I, R, C, W)
            attention = ops.transpose(attention, (0, 2, 1, 3))
            if images_mask is not None:
                attention = attention * ops.cast(
                    images_mask, attention.dtype
                )[:, None, :, None]
            return attention
        attention = weights / total[:, None]
        if self.cross_attn == "t2i":
            attention = ops.transpose(attention, (0, 2, 3, 1))  # from (I, R, C, W)
            if captions_mask is not None:
                attention = attention * ops.cast(
                    captions_mask, attention.dtype
                )[None, :, :, None]
        else:
            attention = ops.transpose(attention, (2, 0, 3, 1))  # from (C, W, I, R)
            if images_mask is not None:
                attention = attention * ops.cast(
                    images_mask, attention.dtype
                )[:, None, :, None]
        return attention

    def compute_mask(self, inputs, previous_mask=None):
        # The (I, C) similarity matrix has no padding of its own.
        return None

    def compute_output_shape(self, images_shape, captions_shape):
        return (images_shape[0], captions_shape[0])

    def compute_output_spec(
        self,
        images,
        captions,
        images_mask=None,
        captions_mask=None,
        return_attention_scores=False,
    ):
        n_images, n_regions = images.shape[0], images.shape[1]
        n_captions, n_words = captions.shape[0], captions.shape[1]
        scores = keras.KerasTensor(
            (n_images, n_captions), dtype=self.compute_dtype
        )
        if not return_attention_scores:
            return scores
        if self.cross_attn == "t2i":
            shape = (n_images, n_captions, n_words, n_regions)
        else:
            shape = (n_images, n_captions, n_regions, n_words)
        return scores, keras.KerasTensor(shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "cross_attn": self.cross_attn,
                "lambda_softmax": self.lambda_softmax,
                "agg_func": self.agg_func,
                "lambda_lse": self.lambda_lse,
                "raw_feature_norm": self.raw_feature_norm,
                "eps": self.eps,
                "chunk_size": self.chunk_size,
                "product_dtype": self.product_dtype,
                "torch_compile": self.torch_compile,
                "kernel": self.kernel,
            }
        )
        return config
