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
    masked_softmax,
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

# Automatic chunking keeps each (images, captions, regions, words) tensor
# under this many elements: about 128 MiB in float32, and a few such tensors
# are alive at once.
_AUTO_CHUNK_ELEMENTS = 2**25


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
        chunk_size: captions scored at once. `None` picks a size that keeps
            each intermediate tensor near 2**25 elements. Chunking needs
            the numbers of images and captions to be known when the layer is
            called (always true in eager mode and under JAX).
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
        super().__init__(**kwargs)
        self.cross_attn = cross_attn
        self.lambda_softmax = float(lambda_softmax)
        self.agg_func = agg_func
        self.lambda_lse = float(lambda_lse)
        self.raw_feature_norm = raw_feature_norm
        self.eps = float(eps)
        self.chunk_size = chunk_size

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

    def _math_dtype(self):
        # Under mixed precision the product of all words with all regions
        # runs in 16 bits; norms, softmax and pooling run in float32.
        dtype = self.compute_dtype
        return "float32" if dtype in ("float16", "bfloat16") else dtype

    def _chunk_length(self, images_shape, captions_shape):
        n_captions = captions_shape[0]
        if n_captions is None:
            return None
        if self.chunk_size is not None:
            return self.chunk_size
        n_images, n_regions = images_shape[0], images_shape[1]
        n_words = captions_shape[1]
        if None in (n_images, n_regions, n_words):
            return None
        per_caption = max(1, n_images * n_regions * n_words)
        return max(1, _AUTO_CHUNK_ELEMENTS // per_caption)

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

        dtype = self._math_dtype()
        # What depends on the images alone is computed once, not per chunk.
        images_full = ops.cast(images, dtype)
        if self.cross_attn == "t2i":
            image_side = ops.matmul(
                images_full, ops.transpose(images_full, (0, 2, 1))
            )
        else:
            image_side = safe_norm(images_full, axis=-1)

        def score_chunk(chunk):
            caps, caps_mask = chunk
            scores, attention = self._score(
                images, caps, images_mask, caps_mask, image_side
            )
            return (scores, attention) if return_attention_scores else scores

        n_captions = captions.shape[0]
        chunk = self._chunk_length(images.shape, captions.shape)
        if chunk is None or chunk >= n_captions:
            outputs = score_chunk((captions, captions_mask))
        else:
            outputs = self._map_chunks(
                score_chunk, captions, captions_mask, chunk
            )
        outputs = keras.tree.map_structure(
            lambda x: ops.cast(x, self.compute_dtype), outputs
        )
        return outputs

    def _map_chunks(self, score_chunk, captions, captions_mask, chunk):
        """Scores captions `chunk` at a time with one compiled body."""
        n_captions, n_words, dim = captions.shape
        n_chunks = -(-n_captions // chunk)
        pad = n_chunks * chunk - n_captions
        if captions_mask is None:
            captions_mask = ops.ones((n_captions, n_words), dtype="bool")
        # Padding captions are fully masked and sliced away at the end.
        captions = ops.pad(captions, ((0, pad), (0, 0), (0, 0)))
        captions_mask = ops.pad(captions_mask, ((0, pad), (0, 0)))
        chunks = (
            ops.reshape(captions, (n_chunks, chunk, n_words, dim)),
            ops.reshape(captions_mask, (n_chunks, chunk, n_words)),
        )
        stacked = ops.map(score_chunk, chunks)

        def unchunk(x):
            # (n_chunks, I, chunk, ...) -> (I, n_chunks * chunk, ...)
            x = ops.moveaxis(x, 0, 1)
            shape = ops.shape(x)
            x = ops.reshape(x, (shape[0], n_chunks * chunk) + tuple(shape[3:]))
            return x[:, :n_captions]

        return keras.tree.map_structure(unchunk, stacked)

    def _score(self, images, captions, images_mask, captions_mask, image_side):
        """Scores all images against one chunk of captions.

        `image_side` is the images' Gram matrix (t2i) or region norms (i2t).
        Returns the `(I, C)` scores and the attention weights.
        """
        dtype = self._math_dtype()
        # Eq. 1 / 5 start from s[i, c, r, w] = v_ir . e_cw: the one large
        # product, in the compute dtype.
        s = ops.cast(ops.einsum("ird,cwd->icrw", images, captions), dtype)
        captions = ops.cast(captions, dtype)
        region_mask = word_mask = None
        if images_mask is not None:
            region_mask = images_mask[:, None, :, None]  # (I, 1, R, 1)
        if captions_mask is not None:
            word_mask = captions_mask[None, :, None, :]  # (1, C, 1, W)

        if self.cross_attn == "t2i":
            # Normalise across the words for each region, then each word
            # attends over the regions (softmax along r).
            s_norm = normalize_raw_similarity(
                s, self.raw_feature_norm, axis=-1, eps=self.eps, mask=word_mask
            )
            attention = masked_softmax(
                self.lambda_softmax * s_norm, axis=-2, mask=region_mask
            )
            # e_w . a_w and ||a_w||^2 = alpha_w^T G alpha_w, both (I, C, W).
            dot = ops.sum(attention * s, axis=-2)
            # einsum, not a matmul with broadcast batch axes: TensorFlow's
            # oneDNN batch matmul (2.21, CPU) corrupts memory on those.
            g_alpha = ops.einsum("irs,icsw->icrw", image_side, attention)
            attended_sq = ops.sum(attention * g_alpha, -2)
            query_norm = safe_norm(captions, axis=-1)[None]  # (1, C, W)
            pool_mask = None if captions_mask is None else captions_mask[None]
            # Report each word's weights over the regions: (I, C, W, R).
            attention = ops.swapaxes(attention, -1, -2)
        else:
            # Normalise across the regions for each word, then each region
            # attends over the words (softmax along w).
            s_norm = normalize_raw_similarity(
                s,
                self.raw_feature_norm,
                axis=-2,
                eps=self.eps,
                mask=region_mask,
            )
            attention = masked_softmax(
                self.lambda_softmax * s_norm, axis=-1, mask=word_mask
            )
            dot = ops.sum(attention * s, axis=-1)
            # The caption's Gram matrix E E^T, (C, W, W); symmetric, so
            # alpha_r^T H alpha_r is sum_w alpha[r, w] (alpha H)[r, w].
            gram = ops.matmul(captions, ops.swapaxes(captions, -1, -2))
            alpha_h = ops.einsum("icrw,cwv->icrv", attention, gram)
            attended_sq = ops.sum(attention * alpha_h, -1)
            query_norm = image_side[:, None]  # (I, 1, R)
            pool_mask = None if images_mask is None else images_mask[:, None]

        # Eq. 3 / 7: cosine(query, attended) = x.y / max(||x|| ||y||, eps).
        attended_norm = ops.sqrt(ops.maximum(attended_sq, 1e-30))
        relevance = dot / ops.maximum(query_norm * attended_norm, self.eps)
        scores = pool(
            relevance, self.agg_func, self.lambda_lse, mask=pool_mask, axis=-1
        )
        attention = self._zero_padding(attention, images_mask, captions_mask)
        return scores, attention

    def _zero_padding(self, attention, images_mask, captions_mask):
        """Zeros the weights that belong to padded regions or words."""
        if self.cross_attn == "t2i":  # (I, C, W, R)
            masks = (
                None if images_mask is None else images_mask[:, None, None, :],
                None if captions_mask is None else captions_mask[None, :, :, None],
            )
        else:  # (I, C, R, W)
            masks = (
                None if images_mask is None else images_mask[:, None, :, None],
                None if captions_mask is None else captions_mask[None, :, None, :],
            )
        for mask in masks:
            if mask is not None:
                attention = attention * ops.cast(mask, attention.dtype)
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
            }
        )
        return config
