"""The Stacked Cross Attention layer (Lee et al., ECCV 2018): paper section
3.1 "Image-Text Stacked Cross Attention" and section 3.2 "Text-Image Stacked
Cross Attention".

The layer is a short chain: check the inputs, choose how to compute (the
portable `keras.ops` path by chunks, or the fused kernel), and run the
paper's equations (`equations.py`) over the planned tiles (`planning.py`).
Only the mathematics is saved with the layer; how it runs is chosen when it
is called.
"""

import warnings

import keras
from keras import ops

from scan_keras.checks import check_choice, check_positive_int
from scan_keras.layers import eager, platform
from scan_keras.layers.equations import (
    attention_weights,
    gram_matrix,
    i2t_scores,
    pool,  # noqa: F401 (public here since the first release)
    product_operand,
    t2i_scores,
)
from scan_keras.layers.norms import safe_norm
from scan_keras.layers.options import (
    AGG_FUNCS,  # noqa: F401 (public here since the first release)
    CROSS_ATTNS,  # noqa: F401
    IMPLEMENTATIONS,
    PRODUCT_DTYPES,
    AttentionOptions,
    check_attention_options,
    fused_unsupported,
)
from scan_keras.layers.pallas import tiles
from scan_keras.layers.planning import default_budget, map_rows, plan_tiles
from scan_keras.layers.validation import check_pair_inputs, check_pair_shapes

# Compiled versions of the chunk scoring that torch keeps (`torch_compile`):
# every layer shares the scoring code, so torch's default of 8 would be
# reached by four layers with remainders on both axes.
_TORCH_RECOMPILE_LIMIT = 64


@keras.saving.register_keras_serializable(package="scan_keras")
class StackedCrossAttention(keras.layers.Layer):
    """Stacked Cross Attention: the similarity of every image with every caption.

    From *Stacked Cross Attention for Image-Text Matching* (Lee et al., ECCV
    2018). Given encoded image regions v_r and caption words e_w, it scores
    each image-caption pair by letting words attend over regions (`"t2i"`,
    section 3.2 "Text-Image Stacked Cross Attention") or regions attend
    over words (`"i2t"`, section 3.1 "Image-Text Stacked Cross Attention"):

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
        product_dtype: dtype of the operands of the one product of all
            regions with all words, the bulk of the arithmetic: `None` (the
            layer's compute dtype), `"float32"`, `"bfloat16"` or
            `"float16"`. 16-bit operands halve the product's memory traffic
            and use faster matrix units; what follows the product stays in
            float32 (see `benchmarks/similarity.py` for the speed and the
            error).
        implementation: how the scores are computed, chosen when the layer
            is called and not saved with it: `"portable"` (`keras.ops`,
            every backend), `"pallas"` (JAX: one fused Pallas (Triton)
            kernel per tile of images x captions, which never writes the
            region-word scores to memory; meant for GPUs, on a CPU it runs
            in Pallas' slow interpreter) or `"auto"` (the portable path
            until the fused kernel is measured faster on a GPU). Where the
            fused kernel cannot run (another backend, a JAX without Pallas'
            Triton backend), `"pallas"` warns once and runs the portable
            path. The kernel computes the l1 and l2 norms with
            `lambda_softmax <= 20` and captions of up to 64 words;
            gradients, the attention weights and longer captions take the
            portable path.
        chunk_size: captions scored at once, against all images (not saved).
            `None` plans the tiles itself: each intermediate tensor stays
            near `2**25` elements on a GPU and `2**20` on a CPU, with at least
            16 captions a chunk, and the images are tiled as well when that
            is still too large.
        torch_compile: on the PyTorch backend, score each chunk through
            `torch.compile` (not saved): the operations after the product
            fuse, at the price of a compilation of a few seconds per chunk
            shape. Other backends compile whole functions already (`jax.jit`,
            XLA) and ignore it.
        jit_compile: called eagerly with concrete arrays on JAX or
            TensorFlow, run the layer as a compiled function of its own
            (`"auto"`, the default, or True), cached per size of the
            inputs rounded up (`eager.bucket`); False runs the operations
            one by one. On TensorFlow `"auto"` compiles only calls of a
            few tiles, whose compilation is short. Inside `fit`, `predict` or a traced function the
            enclosing compilation applies either way. Not saved.
        kernel: deprecated name of `implementation`.
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
        product_dtype: str | None = None,
        implementation: str = "auto",
        chunk_size: int | None = None,
        torch_compile: bool = False,
        jit_compile: bool | str = "auto",
        kernel: str | None = None,
        **kwargs,
    ):
        check_attention_options(
            cross_attn, lambda_softmax, agg_func, lambda_lse, raw_feature_norm, eps
        )
        if product_dtype is not None:
            check_choice("product_dtype", product_dtype, PRODUCT_DTYPES)
        if kernel is not None:
            # Saved by earlier versions; an execution choice, like
            # `implementation`, so a model saved with it loads anywhere.
            check_choice("kernel", kernel, IMPLEMENTATIONS)
            implementation = kernel
        check_choice("implementation", implementation, IMPLEMENTATIONS)
        check_positive_int("chunk_size", chunk_size, allow_none=True)
        if not isinstance(torch_compile, bool):
            raise ValueError(
                "Expected `torch_compile` to be True or False. "
                f"Received: torch_compile={torch_compile!r}"
            )
        if jit_compile not in ("auto", True, False):
            raise ValueError(
                "Expected `jit_compile` to be 'auto', True or False. "
                f"Received: jit_compile={jit_compile!r}"
            )
        if implementation == "pallas":
            problem = fused_unsupported(raw_feature_norm, lambda_softmax)
            if problem is not None:
                raise ValueError(f"implementation='pallas': {problem}.")
        super().__init__(**kwargs)
        self.cross_attn = cross_attn
        self.lambda_softmax = float(lambda_softmax)
        self.agg_func = agg_func
        self.lambda_lse = float(lambda_lse)
        self.raw_feature_norm = raw_feature_norm
        self.eps = float(eps)
        self.product_dtype = product_dtype
        self.implementation = implementation
        self.chunk_size = chunk_size
        self.torch_compile = torch_compile
        self.jit_compile = jit_compile

    @property
    def kernel(self):
        """Deprecated name of `implementation`."""
        return self.implementation

    @property
    def execution(self):
        """How the layer runs (not saved): implementation, chunks, compiler."""
        return {
            "implementation": self.implementation,
            "chunk_size": self.chunk_size,
            "torch_compile": self.torch_compile,
            "jit_compile": self.jit_compile,
        }

    @property
    def options(self):
        """The layer's mathematics, as `equations.py` reads it."""
        return AttentionOptions(
            self.cross_attn,
            self.lambda_softmax,
            self.agg_func,
            self.lambda_lse,
            self.raw_feature_norm,
            self.eps,
            self.product_dtype,
        )

    def build(self, images_shape, captions_shape):
        check_pair_shapes(images_shape, captions_shape)
        self.built = True

    def call(
        self,
        images,
        captions,
        images_mask=None,
        captions_mask=None,
        return_attention_scores=False,
    ):
        check_pair_inputs(images, captions, images_mask, captions_mask)
        if images_mask is not None:
            images_mask = ops.cast(images_mask, "bool")
        if captions_mask is not None:
            captions_mask = ops.cast(captions_mask, "bool")

        def compute(images, captions, images_mask, captions_mask):
            if not return_attention_scores and self._use_fused(captions.shape[1]):
                return self._fused(images, captions, images_mask, captions_mask)
            return self._portable(
                images, captions, images_mask, captions_mask, return_attention_scores
            )

        if eager.compiles_eager_calls(
            self.jit_compile, self._tiles(images.shape, captions.shape), images, captions
        ):
            # Options in the key: a changed lambda_1 must not reuse old code.
            key = (return_attention_scores, self.options, tuple(self.execution.items()))
            return eager.compiled_call(
                self, compute, images, captions, images_mask, captions_mask, key
            )
        return compute(images, captions, images_mask, captions_mask)

    def _tiles(self, images_shape, captions_shape):
        """How many tiles the portable path runs for these shapes."""
        image_block, chunk = plan_tiles(
            images_shape, captions_shape, default_budget(), self.chunk_size
        )
        n_images, n_captions = images_shape[0], captions_shape[0]
        if n_images is None or n_captions is None:  # traced: never compiled here
            return 0
        return -(-n_images // (image_block or n_images)) * -(-n_captions // (chunk or n_captions))

    def _use_fused(self, n_words):
        """Whether this call runs the fused kernel (see `implementation`)."""
        wanted = self.implementation == "pallas" or (
            self.implementation == "auto"
            and platform.FUSED_BY_DEFAULT
            and fused_unsupported(self.raw_feature_norm, self.lambda_softmax) is None
        )
        if not wanted:
            return False
        problem = platform.fused_kernel_unavailable()
        if problem is not None:
            if self.implementation == "pallas" and not self.__dict__.get("_warned"):
                warnings.warn(
                    f"{self.name}: implementation='pallas' cannot run here "
                    f"({problem}); the portable path computes the same "
                    "scores.",
                    stacklevel=3,
                )
                object.__setattr__(self, "_warned", True)
            return False
        # Captions over 64 words would widen the kernel's tiles past an
        # H100's shared memory: they (rare) take the portable path.
        return tiles.padded_words(n_words) <= tiles.DEFAULT_TILES["columns"]

    def _fused(self, images, captions, images_mask, captions_mask):
        """The scores from the fused kernel, with the portable path's
        gradients."""
        from scan_keras.layers.pallas import kernel

        # As in the portable path, a 16-bit compute dtype (a mixed
        # precision policy) is the product's unless `product_dtype` says.
        options = self.options.as_dict()
        dtype = keras.backend.standardize_dtype(images.dtype)
        if options["product_dtype"] is None and dtype in ("float16", "bfloat16"):
            options["product_dtype"] = dtype

        def mask(m, x):
            if m is None:
                return ops.ones(x.shape[:2], "float32")
            return ops.cast(m, "float32")

        def fused(images, captions, images_mask, captions_mask):
            return kernel.similarities(
                images, captions, images_mask, captions_mask, **options
            )

        def portable(images, captions, images_mask, captions_mask):
            return self._portable(
                images, captions, images_mask > 0, captions_mask > 0, False
            )

        scores = kernel.with_portable_gradients(fused, portable)(
            images, captions, mask(images_mask, images), mask(captions_mask, captions)
        )
        return ops.cast(scores, self.compute_dtype)

    def _portable(
        self, images, captions, images_mask, captions_mask, return_attention_scores
    ):
        """The scores (and attention weights) in `keras.ops`, by tiles."""
        options = self.options
        layout = "ircw" if self.cross_attn == "t2i" else platform.i2t_layout()
        if images_mask is not None:
            # Padded regions become zero vectors: zero similarities, so
            # they drop out of the norms of Eq. 5 (equations.py's label).
            images = images * ops.cast(images_mask, images.dtype)[..., None]
        # What depends on the images alone is computed once, not per chunk:
        # the Gram matrix (t2i) or the region norms (i2t), and the product's
        # operand.
        images_full = ops.cast(images, "float32")
        if self.cross_attn == "t2i":
            image_side = gram_matrix(images_full)
        else:
            image_side = safe_norm(images_full, axis=-1)
        images = product_operand(images, self.product_dtype)
        image_block, chunk = plan_tiles(
            images.shape, captions.shape, default_budget(), self.chunk_size
        )
        score = self._chunk_scorer()

        def score_images(image_tile):
            images, images_mask, image_side = image_tile
            if layout == "cwir":
                # The product's right operand, transposed once per tile.
                images = ops.transpose(images, (2, 0, 1))

            def score_chunk(caption_tile):
                caps, caps_mask = caption_tile
                scores, (weights, total) = score(
                    images, caps, images_mask, caps_mask, image_side, options, layout
                )
                if not return_attention_scores:
                    return scores
                attention = attention_weights(
                    weights, total, images_mask, caps_mask, self.cross_attn, layout
                )
                return scores, attention

            return map_rows(score_chunk, (captions, captions_mask), chunk, axis=1)

        outputs = map_rows(
            score_images, (images, images_mask, image_side), image_block, axis=0
        )
        return keras.tree.map_structure(
            lambda x: ops.cast(x, self.compute_dtype), outputs
        )

    def _chunk_scorer(self):
        """The equations for one tile, through `torch.compile` when asked.

        Only the tile is compiled, not the loop over tiles, which
        `torch.compile` would unroll: one compilation per tile shape.
        """
        if not self.torch_compile or platform.backend() != "torch":
            return _score_tile
        scorer = self.__dict__.get("_compiled_score")
        if scorer is None:
            scorer = platform.torch_compile_scorer(_score_tile, _TORCH_RECOMPILE_LIMIT)
            # Set past Keras' attribute tracking: nothing to save or walk.
            object.__setattr__(self, "_compiled_score", scorer)
        return scorer

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
        scores = keras.KerasTensor((n_images, n_captions), dtype=self.compute_dtype)
        if not return_attention_scores:
            return scores
        if self.cross_attn == "t2i":
            shape = (n_images, n_captions, n_words, n_regions)
        else:
            shape = (n_images, n_captions, n_regions, n_words)
        return scores, keras.KerasTensor(shape, dtype=self.compute_dtype)

    def get_config(self):
        # The mathematics only: how the layer runs is no part of the model.
        config = super().get_config()
        config.update(self.options.as_dict())
        return config


def _score_tile(images, captions, images_mask, captions_mask, image_side, options, layout):
    """All images of a tile against one chunk of captions (`equations.py`)."""
    if options.cross_attn == "t2i":
        return t2i_scores(images, captions, images_mask, captions_mask, image_side, options)
    return i2t_scores(
        images, captions, images_mask, captions_mask, image_side, options, layout
    )
