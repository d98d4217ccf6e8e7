"""The SCAN model: encoders, Stacked Cross Attention and the hinge loss.

`SCAN` puts the paper's pieces together as one `keras.Model`:

    region features (B, R, img_dim) --RegionEncoder-->  regions (B, R, h)
    token ids       (B, W)          --CaptionEncoder--> words   (B, W, h) + mask
    regions, words  --StackedCrossAttention--> similarity matrix (B, B)
    similarity matrix --ContrastiveLoss (diagonal = positives)--> loss

Training goes through `compile()` / `fit()`: the model overrides only
`compute_loss`, so Keras' own train step runs on every backend, with
`jit_compile`, callbacks and `keras.distribution` untouched. Under
`DataParallel` the batch is split across devices while the (B, B) matrix
and its hardest negatives cover the whole global batch.
"""

import keras
import numpy as np
from keras import ops

from scan_keras.data.vocabulary import DEFAULT_TOKENIZER, Vocabulary
from scan_keras.layers import (
    CaptionEncoder,
    GlobalSimilarity,
    RegionEncoder,
    StackedCrossAttention,
)
from scan_keras.jit import compiled, finite_rows, pad_rows
from scan_keras.layers.validation import check_rank
from scan_keras.losses import ContrastiveLoss

def _as_vocabulary(vocabulary):
    if vocabulary is None or isinstance(vocabulary, Vocabulary):
        return vocabulary
    if isinstance(vocabulary, dict) and "words" in vocabulary:
        # Models saved before the tokenizer was recorded hold no name: they
        # were trained on the regular-expression tokenizer.
        return Vocabulary(
            vocabulary["words"],
            tokenizer=vocabulary.get("tokenizer", DEFAULT_TOKENIZER),
        )
    return Vocabulary(list(vocabulary))


def _unpack(inputs):
    if isinstance(inputs, dict):
        missing = {"features", "token_ids"} - set(inputs)
        if missing:
            raise ValueError(
                "SCAN expects inputs {'features': ..., 'token_ids': ...}. "
                f"Missing: {sorted(missing)}"
            )
        return inputs["features"], inputs["token_ids"]
    if isinstance(inputs, (list, tuple)) and len(inputs) == 2:
        return inputs[0], inputs[1]
    raise ValueError(
        "SCAN expects inputs {'features': (batch, n_regions, img_dim), "
        "'token_ids': (batch, n_words)} or a pair (features, token_ids). "
        f"Received: {type(inputs).__name__}"
    )


def _store_columns(sims, columns, scores):
    """Writes a block of scores (padded rows dropped) into columns of `sims`."""
    scores = ops.convert_to_numpy(ops.cast(scores, "float32"))
    sims[:, columns] = scores[:, : len(columns)]


@keras.saving.register_keras_serializable(package="scan_keras")
class SCAN(keras.Model):
    """Stacked Cross Attention Network for image-text matching.

    From *Stacked Cross Attention for Image-Text Matching* (Lee et al.,
    ECCV 2018). Called on a batch of matching pairs, it returns the
    similarity of every image with every caption of the batch; the
    diagonal holds the matching pairs, which is what `ContrastiveLoss`
    trains on. `compile()` needs only an optimizer: the loss is built in.

    Args:
        vocab_size: number of token ids, padding (0) included. May be
            left out when `vocabulary` is given.
        vocabulary: optional `scan_keras.data.Vocabulary` (or its word
            list). It is saved with the model, so a `.keras` file can
            tokenise captions by itself.
        img_dim: size of the precomputed region features (2048).
        embed_size: size h of the joint space (1024).
        word_dim: size of the word embeddings (300).
        num_layers: stacked GRU layers of the caption encoder.
        bidirectional: bidirectional GRU (the paper's).
        no_imgnorm: skip the l2 normalisation of region vectors.
        no_txtnorm: skip the l2 normalisation of word vectors.
        cross_attn: `"t2i"` or `"i2t"`, see `StackedCrossAttention`.
        lambda_softmax: lambda_1 of the attention softmax.
        agg_func: pooling of the relevances: `"mean"`, `"logsumexp"`,
            `"max"` or `"sum"`.
        lambda_lse: lambda_2 of LSE pooling.
        raw_feature_norm: normalisation of the raw similarities
            (`"clipped_l2norm"`, the paper's).
        margin: margin of the hinge loss.
        max_violation: hardest negatives only (VSE++), as every SCAN
            result uses.
        product_dtype: operand dtype of the attention's one large product
            (`None`, `"float32"`, `"bfloat16"` or `"float16"`), see
            `StackedCrossAttention`. `"bfloat16"` speeds up `similarity`
            on whole test sets at about 1e-3 relative error.
        torch_compile: on the PyTorch backend, run the attention's chunks
            through `torch.compile` (see `StackedCrossAttention`): faster
            scoring of whole test sets, a few seconds of compilation per
            shape. Ignored by the other backends.
        kernel: `"portable"` or, on JAX (meant for GPUs), `"pallas"`: the
            attention's scores from one fused kernel (see
            `StackedCrossAttention`).
        **kwargs: `keras.Model` keyword arguments, such as `name`.

    Call arguments:
        inputs: a dict `{"features": (B, R, img_dim), "token_ids": (B, W)}`
            or a pair `(features, token_ids)`. Token id 0 is padding.

    Returns:
        The similarity matrix `(B_images, B_captions)`.

    Example:

    ```python
    import keras
    import numpy as np
    from scan_keras.models import SCAN

    model = SCAN(vocab_size=20, img_dim=16, embed_size=32, word_dim=8)
    model.compile(optimizer=keras.optimizers.Adam(2e-4, global_clipnorm=2.0))
    batch = {
        "features": np.random.rand(8, 5, 16).astype("float32"),
        "token_ids": np.random.randint(1, 20, size=(8, 7)),
    }
    model.fit(batch, epochs=1, verbose=0)  # no labels: the diagonal pairs
    model.similarity(batch["features"], batch["token_ids"]).shape  # (8, 8)
    ```
    """

    def __init__(
        self,
        vocab_size: int | None = None,
        vocabulary=None,
        img_dim: int = 2048,
        embed_size: int = 1024,
        word_dim: int = 300,
        num_layers: int = 1,
        bidirectional: bool = True,
        no_imgnorm: bool = False,
        no_txtnorm: bool = False,
        cross_attn: str = "t2i",
        lambda_softmax: float = 9.0,
        agg_func: str = "mean",
        lambda_lse: float = 6.0,
        raw_feature_norm: str = "clipped_l2norm",
        margin: float = 0.2,
        max_violation: bool = True,
        product_dtype: str | None = None,
        torch_compile: bool = False,
        kernel: str = "portable",
        **kwargs,
    ):
        vocabulary = _as_vocabulary(vocabulary)
        if vocabulary is not None:
            if vocab_size is not None and vocab_size != len(vocabulary):
                raise ValueError(
                    "`vocab_size` must equal the size of `vocabulary`. "
                    f"Received: vocab_size={vocab_size}, "
                    f"len(vocabulary)={len(vocabulary)}"
                )
            vocab_size = len(vocabulary)
        if vocab_size is None:
            raise ValueError("SCAN needs `vocab_size` or `vocabulary`.")
        if not isinstance(img_dim, int) or img_dim < 1:
            raise ValueError(
                f"Expected `img_dim` to be a positive integer. Received: img_dim={img_dim!r}"
            )
        super().__init__(**kwargs)
        self.vocabulary = vocabulary
        self.vocab_size = vocab_size
        self.img_dim = img_dim
        # The sub-layers validate their own arguments.
        self.image_encoder = RegionEncoder(
            embed_size, no_imgnorm=no_imgnorm, dtype=self.dtype_policy,
            name="image_encoder",
        )
        self.caption_encoder = CaptionEncoder(
            vocab_size,
            word_dim=word_dim,
            embed_size=embed_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            no_txtnorm=no_txtnorm,
            dtype=self.dtype_policy,
            name="caption_encoder",
        )
        self.attention = self._similarity_layer(
            cross_attn=cross_attn,
            lambda_softmax=lambda_softmax,
            agg_func=agg_func,
            lambda_lse=lambda_lse,
            raw_feature_norm=raw_feature_norm,
            product_dtype=product_dtype,
            torch_compile=torch_compile,
            kernel=kernel,
        )
        self.contrastive_loss = ContrastiveLoss(
            margin=margin, max_violation=max_violation
        )

    def _similarity_layer(self, **attention_options):
        """The layer that scores every image against every caption."""
        return StackedCrossAttention(
            **attention_options, dtype=self.dtype_policy, name="attention"
        )

    def _similarity_config(self):
        """The constructor arguments of `_similarity_layer`, for `get_config`."""
        return {
            name: getattr(self.attention, name)
            for name in (
                "cross_attn",
                "lambda_softmax",
                "agg_func",
                "lambda_lse",
                "raw_feature_norm",
                "product_dtype",
                "torch_compile",
                "kernel",
            )
        }

    @classmethod
    def from_preset(cls, preset, vocabulary=None, vocab_size=None, **overrides):
        """A model configured like one of the paper's variants.

        Args:
            preset: a `scan_keras.presets.Preset` or its name, such as
                `"f30k_t2i_avg"`.
            vocabulary: the `Vocabulary` (or pass `vocab_size`).
            vocab_size: number of token ids when no vocabulary is given.
            **overrides: constructor arguments that replace the preset's,
                e.g. `embed_size=64` for a small test model.
        """
        from scan_keras.presets import get_preset

        if isinstance(preset, str):
            preset = get_preset(preset)
        config = dict(
            img_dim=preset.img_dim,
            embed_size=preset.embed_size,
            word_dim=preset.word_dim,
            num_layers=preset.num_layers,
            bidirectional=preset.bidirectional,
            margin=preset.margin,
            max_violation=preset.max_violation,
            name=f"{cls._preset_prefix}_{preset.name}",
            **cls._preset_similarity_config(preset),
        )
        config.update(overrides)
        return cls(vocab_size=vocab_size, vocabulary=vocabulary, **config)

    _preset_prefix = "scan"

    @staticmethod
    def _preset_similarity_config(preset):
        return preset.attention_config()

    # Building from the configuration alone (no sample input needed) lets
    # `.keras` files load and a run's backup restore before any data.
    def build(self, input_shape=None):
        self.image_encoder.build((None, None, self.img_dim))
        self.caption_encoder.build((None, None))
        self.built = True

    def get_build_config(self):
        # Non-empty, or Keras skips `build_from_config` when loading.
        return {"from_config": True}

    def build_from_config(self, config):
        self.build()

    # --- the two encoders, as the paper names them --------------------------

    def encode_images(self, features):
        """Region vectors of images, `(n, R, img_dim) -> (n, R, embed_size)`."""
        check_rank(ops.shape(features), 3, "features", "(n_images, n_regions, img_dim)")
        return self.image_encoder(features)

    def encode_captions(self, token_ids):
        """Word vectors and mask, `(n, W) -> ((n, W, embed_size), (n, W))`."""
        check_rank(ops.shape(token_ids), 2, "token_ids", "(n_captions, n_words)")
        words = self.caption_encoder(token_ids)
        return words, self.caption_encoder.compute_mask(token_ids)

    def call(self, inputs, training=None):
        features, token_ids = _unpack(inputs)
        regions = self.encode_images(features)
        words, words_mask = self.encode_captions(token_ids)
        return self.attention(regions, words, captions_mask=words_mask)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        # The targets are the diagonal of y_pred: `y` is unused.
        loss = self.contrastive_loss(None, y_pred)
        if self.losses:
            loss = loss + ops.sum(self.losses)
        return loss

    # --- all-pairs similarity for evaluation --------------------------------

    def similarity(
        self,
        features,
        token_ids,
        batch_size=128,
        caption_batch_size=128,
        verbose="auto",
    ):
        """The similarity of every image with every caption, as NumPy.

        Works on whole test sets: images are encoded `batch_size` at a
        time, captions are sorted by length and encoded and scored in
        batches of similar length (little padding), and the attention
        layer chunks its own work. `features` may be a memory-mapped array.

        Args:
            features: region features `(n_images, R, img_dim)`.
            token_ids: padded token ids `(n_captions, W)`; 0 is padding.
            batch_size: images encoded at a time.
            caption_batch_size: captions encoded and scored at a time.
            verbose: show a progress bar (`"auto"`: when on a terminal
                and the work is large).

        Returns:
            float32 NumPy array `(n_images, n_captions)`.
        """
        token_ids = np.asarray(token_ids)
        if token_ids.ndim != 2:
            raise ValueError(
                "Expected `token_ids` of shape (n_captions, n_words). "
                f"Received: token_ids.shape={token_ids.shape}"
            )
        lengths = (token_ids != 0).sum(axis=1)
        if np.any(lengths == 0):
            empty = int(np.flatnonzero(lengths == 0)[0])
            raise ValueError(
                f"Caption {empty} is empty (all padding): every caption "
                "needs at least one token."
            )
        n_images = len(features)
        encode_images = compiled(self, "encode_images", self.encode_images)
        # The attention's options are part of the key: changing one (say
        # `model.attention.product_dtype`) after a first call recompiles.
        score = compiled(
            self, ("score", repr(self._similarity_config())), self._score_captions
        )
        # Compiled (JAX), each new input shape costs a compilation:
        # pad_rows gives the blocks fixed sizes, so a test set compiles a
        # handful.
        blocks = []
        for start in range(0, n_images, batch_size):
            block = finite_rows(features, start, start + batch_size)
            blocks.append(encode_images(pad_rows(block, batch_size))[: len(block)])
        regions = ops.concatenate(blocks, axis=0)

        order = np.argsort(lengths, kind="stable")
        batches = [
            order[start : start + caption_batch_size]
            for start in range(0, len(order), caption_batch_size)
        ]
        if verbose == "auto":
            verbose = len(batches) * n_images >= 50_000
        progress = keras.utils.Progbar(len(batches)) if verbose else None
        sims = np.empty((n_images, len(token_ids)), dtype="float32")
        pending = None
        for k, batch in enumerate(batches):
            # Sorted by length, a batch needs little padding; rounding its
            # width up to a multiple of 8 keeps the number of shapes small.
            width = min(token_ids.shape[1], -(-int(lengths[batch].max()) // 8) * 8)
            ids = pad_rows(token_ids[batch, :width], caption_batch_size)
            scores = score(regions, ids)
            # Copied to the host one batch late: on an accelerator the next
            # batch is already queued while this copy waits for the last.
            if pending is not None:
                _store_columns(sims, *pending)
            pending = (batch, scores)
            if progress is not None:
                progress.update(k + 1)
        if pending is not None:
            _store_columns(sims, *pending)
        return sims

    def _score_captions(self, regions, token_ids):
        """Encodes a block of captions and scores them against `regions`."""
        words, words_mask = self.encode_captions(token_ids)
        return self.attention(regions, words, captions_mask=words_mask)

    def get_config(self):
        encoder = self.caption_encoder
        config = {
            "name": self.name,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "vocab_size": self.vocab_size,
            "vocabulary": None
            if self.vocabulary is None
            else {
                "words": self.vocabulary.words,
                "tokenizer": self.vocabulary.tokenizer,
            },
            "img_dim": self.img_dim,
            "embed_size": encoder.embed_size,
            "word_dim": encoder.word_dim,
            "num_layers": encoder.num_layers,
            "bidirectional": encoder.bidirectional,
            "no_imgnorm": self.image_encoder.no_imgnorm,
            "no_txtnorm": encoder.no_txtnorm,
            **self._similarity_config(),
            "margin": self.contrastive_loss.margin,
            "max_violation": self.contrastive_loss.max_violation,
        }
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.saving.deserialize_keras_object(
                config["dtype"]
            )
        return cls(**config)


@keras.saving.register_keras_serializable(package="scan_keras")
class GlobalEmbedding(SCAN):
    """The global-embedding baseline: SCAN's encoders without the attention.

    VSE++ (Faghri et al., BMVC 2018) as the paper compares against it, on
    the same encoders, loss and training: an image is the mean of its
    region vectors, a caption the mean of its word vectors, and a pair is
    scored by their cosine (`GlobalSimilarity`). Everything else, from
    `fit` to `similarity` and `.keras` files, works as for `SCAN`; the
    difference in recall between the two is what attending word by word
    buys.

    Args:
        vocab_size: number of token ids, as for `SCAN`.
        vocabulary: optional `Vocabulary`, as for `SCAN`.
        img_dim: size of the precomputed region features.
        embed_size: size of the joint space.
        word_dim: size of the word embeddings.
        num_layers: stacked GRU layers of the caption encoder.
        bidirectional: bidirectional GRU.
        no_imgnorm: skip the l2 normalisation of region vectors.
        no_txtnorm: skip the l2 normalisation of word vectors.
        margin: margin of the hinge loss.
        max_violation: hardest negatives only (VSE++).
        **kwargs: `keras.Model` keyword arguments, such as `name`.

    Call arguments:
        inputs: as for `SCAN`.

    Returns:
        The similarity matrix `(B_images, B_captions)`.

    Example:

    ```python
    import numpy as np
    from scan_keras.models import GlobalEmbedding

    model = GlobalEmbedding(vocab_size=20, img_dim=16, embed_size=32, word_dim=8)
    model.compile(optimizer="adam")
    batch = {
        "features": np.random.rand(8, 5, 16).astype("float32"),
        "token_ids": np.random.randint(1, 20, size=(8, 7)),
    }
    model.fit(batch, epochs=1, verbose=0)
    model.similarity(batch["features"], batch["token_ids"]).shape  # (8, 8)
    ```
    """

    _preset_prefix = "global"

    def __init__(
        self,
        vocab_size: int | None = None,
        vocabulary=None,
        img_dim: int = 2048,
        embed_size: int = 1024,
        word_dim: int = 300,
        num_layers: int = 1,
        bidirectional: bool = True,
        no_imgnorm: bool = False,
        no_txtnorm: bool = False,
        margin: float = 0.2,
        max_violation: bool = True,
        **kwargs,
    ):
        super().__init__(
            vocab_size=vocab_size,
            vocabulary=vocabulary,
            img_dim=img_dim,
            embed_size=embed_size,
            word_dim=word_dim,
            num_layers=num_layers,
            bidirectional=bidirectional,
            no_imgnorm=no_imgnorm,
            no_txtnorm=no_txtnorm,
            margin=margin,
            max_violation=max_violation,
            **kwargs,
        )

    def _similarity_layer(self, **attention_options):
        # No attention: the defaults SCAN's constructor passes are unused.
        return GlobalSimilarity(dtype=self.dtype_policy, name="pooling")

    def _similarity_config(self):
        return {}

    @staticmethod
    def _preset_similarity_config(preset):
        return {}
