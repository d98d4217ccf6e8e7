"""The SCAN model: encoders, Stacked Cross Attention and the hinge loss.

`SCAN` composes the paper's pieces into one `keras.Model`: an image
encoder, a caption encoder and a similarity layer, each a Keras layer
saved with `keras.layers.serialize`.

    region features (B, R, img_dim) --RegionEncoder-->  regions (B, R, h)
    token ids       (B, W)          --CaptionEncoder--> words   (B, W, h) + mask
    regions, words  --StackedCrossAttention--> similarity matrix (B, B)
    similarity matrix --ContrastiveLoss (diagonal = positives)--> loss

The models without attention of the paper's Table 3 are the same model
with another similarity layer (`scan_keras.baselines`). Training goes through
`compile()` / `fit()`: the model overrides only `compute_loss`, so Keras'
own train step runs on every backend, with `jit_compile`, callbacks and
`keras.distribution` untouched. Under `DataParallel` the batch is split
across devices while the (B, B) matrix and its hardest negatives cover the
whole global batch.
"""

import keras
from keras import ops

from scan_keras.checks import check_number_at_least, check_positive_int
from scan_keras.data.vocabulary import as_vocabulary
from scan_keras.layers import (
    CaptionEncoder,
    GlobalSimilarity,
    RegionEncoder,
    StackedCrossAttention,
)
from scan_keras.layers.options import MATH_OPTIONS
from scan_keras.layers.validation import check_rank
from scan_keras.losses import ContrastiveLoss
from scan_keras.scoring import similarity_matrix

# The arguments that build the default similarity layer, StackedCrossAttention.
ATTENTION_ARGS = (
    *MATH_OPTIONS, "product_dtype", "implementation", "torch_compile", "kernel",
)


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
        cross_attn: `"t2i"` or `"i2t"` (see `StackedCrossAttention`).
        lambda_softmax: lambda_1 of the attention softmax.
        agg_func: pooling: `"mean"`, `"logsumexp"`, `"max"` or `"sum"`.
        lambda_lse: lambda_2 of LSE pooling.
        raw_feature_norm: normalisation of the raw similarities.
        margin: margin of the hinge loss.
        max_violation: hardest negatives only (VSE++), as every SCAN
            result uses.
        global_loss_weight: adds this times the hinge loss of the cosine of
            mean-pooled regions and words (`GlobalSimilarity`), so that the
            encoders also serve as a dual encoder (`scan_keras.retrieval`).
        product_dtype: operand dtype of the attention's large product.
        implementation: `"auto"`, `"portable"` or `"pallas"` (not saved).
        torch_compile: compile the attention's chunks on PyTorch (not saved).
        kernel: deprecated name of `implementation`.
        image_encoder: a layer `(B, R, img_dim) -> (B, R, h)` to use instead
            of the `RegionEncoder` the arguments above describe.
        caption_encoder: a layer `(B, W) -> (B, W, h)` with a mask, instead
            of the `CaptionEncoder`.
        similarity: a layer scoring every image against every caption with
            `StackedCrossAttention`'s call signature, instead of the
            attention (`GlobalSimilarity` makes the global baseline). Given
            layers are used as they are; the arguments that would build
            them are then ignored.
        preset: the name of the paper's variant the model follows, if any
            (set by `from_preset`; shown beside the paper's row).
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

    # The same model from its parts:
    from scan_keras.layers import (
        CaptionEncoder, RegionEncoder, StackedCrossAttention,
    )
    parts = SCAN(
        image_encoder=RegionEncoder(32),
        caption_encoder=CaptionEncoder(20, word_dim=8, embed_size=32),
        similarity=StackedCrossAttention("i2t", lambda_softmax=4.0),
        img_dim=16,
    )
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
        global_loss_weight: float = 0.0,
        product_dtype: str | None = None,
        implementation: str = "auto",
        torch_compile: bool = False,
        kernel: str | None = None,
        *,
        image_encoder=None,
        caption_encoder=None,
        similarity=None,
        preset: str | None = None,
        **kwargs,
    ):
        vocabulary = as_vocabulary(vocabulary)
        if caption_encoder is not None:
            vocab_size = caption_encoder.vocab_size if vocab_size is None else vocab_size
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
        check_positive_int("img_dim", img_dim)
        check_number_at_least("global_loss_weight", global_loss_weight, 0.0)
        if preset is not None and not isinstance(preset, str):
            raise ValueError(
                f"Expected `preset` to be a preset's name. Received: preset={preset!r}"
            )
        super().__init__(**kwargs)
        self.vocabulary = vocabulary
        self.vocab_size = vocab_size
        self.img_dim = img_dim
        self.preset = preset
        # Layers not given are built from the arguments; each validates its
        # own.
        if image_encoder is None:
            image_encoder = RegionEncoder(
                embed_size, no_imgnorm=no_imgnorm, dtype=self.dtype_policy,
                name="image_encoder",
            )
        if caption_encoder is None:
            caption_encoder = CaptionEncoder(
                vocab_size,
                word_dim=word_dim,
                embed_size=embed_size,
                num_layers=num_layers,
                bidirectional=bidirectional,
                no_txtnorm=no_txtnorm,
                dtype=self.dtype_policy,
                name="caption_encoder",
            )
        if similarity is None:
            similarity = StackedCrossAttention(
                cross_attn=cross_attn,
                lambda_softmax=lambda_softmax,
                agg_func=agg_func,
                lambda_lse=lambda_lse,
                raw_feature_norm=raw_feature_norm,
                product_dtype=product_dtype,
                implementation=implementation,
                torch_compile=torch_compile,
                kernel=kernel,
                dtype=self.dtype_policy,
                name="attention",
            )
        self.image_encoder = image_encoder
        self.caption_encoder = caption_encoder
        self.similarity_layer = similarity
        self.contrastive_loss = ContrastiveLoss(margin=margin, max_violation=max_violation)
        self.global_loss_weight = float(global_loss_weight)
        self._global_head = GlobalSimilarity(dtype=self.dtype_policy, name="global_head")

    @property
    def attention(self):
        """The similarity layer (`StackedCrossAttention` for SCAN)."""
        return self.similarity_layer

    @classmethod
    def from_preset(cls, preset, vocabulary=None, vocab_size=None, **overrides):
        """A model configured like one of the paper's variants.

        Args:
            preset: a `scan_keras.presets.Preset` or its name, such as
                `"f30k_t2i_avg"`.
            vocabulary: the `Vocabulary` (or pass `vocab_size`).
            vocab_size: number of token ids when no vocabulary is given.
            **overrides: constructor arguments replacing the preset's.
        """
        from scan_keras.presets import get_preset

        if isinstance(preset, str):
            preset = get_preset(preset)
        config = dict(preset.model_config(), name=f"scan_{preset.name}", preset=preset.name)
        if "similarity" in overrides:
            # Another similarity layer: the attention's options do not apply.
            for key in ATTENTION_ARGS:
                config.pop(key, None)
        config.update(overrides)
        return cls(vocab_size=vocab_size, vocabulary=vocabulary, **config)

    # Building from the configuration alone (no sample input needed) lets
    # `.keras` files load and a run's backup restore before any data.
    def build(self, input_shape=None):
        # Layers read from a config may arrive built already.
        if not self.image_encoder.built:
            self.image_encoder.build((None, None, self.img_dim))
        if not self.caption_encoder.built:
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
        if training and self.global_loss_weight:
            pooled = self._global_head(regions, words, captions_mask=words_mask)
            self.add_loss(self.global_loss_weight * self.contrastive_loss(None, pooled))
        return self.similarity_layer(regions, words, captions_mask=words_mask)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        # The targets are the diagonal of y_pred: `y` is unused.
        loss = self.contrastive_loss(None, y_pred)
        for extra in self.losses:  # the global head's; layers' regularisers
            loss = loss + extra
        return loss

    def similarity(
        self,
        features,
        token_ids,
        batch_size=128,
        caption_batch_size=128,
        verbose="auto",
    ):
        """The similarity of every image with every caption, as NumPy
        `(n_images, n_captions)`, on whole test sets (the arguments of
        `scan_keras.scoring.similarity_matrix`)."""
        return similarity_matrix(
            self, features, token_ids, batch_size, caption_batch_size, verbose
        )

    def get_config(self):
        return {
            "name": self.name,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "img_dim": self.img_dim,
            "vocabulary": None
            if self.vocabulary is None
            else {
                "words": self.vocabulary.words,
                "tokenizer": self.vocabulary.tokenizer,
            },
            "image_encoder": _serialize(self.image_encoder),
            "caption_encoder": _serialize(self.caption_encoder),
            "similarity": _serialize(self.similarity_layer),
            "margin": self.contrastive_loss.margin,
            "max_violation": self.contrastive_loss.max_violation,
            "global_loss_weight": self.global_loss_weight,
            "preset": self.preset,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.saving.deserialize_keras_object(
                config["dtype"]
            )
        if "image_encoder" not in config:
            return cls(**_from_flat_config(config))
        for key in ("image_encoder", "caption_encoder", "similarity"):
            config[key] = keras.layers.deserialize(config[key])
        return cls(**config)


def _serialize(layer):
    # Without the shapes of the layer's last call: the model builds its
    # parts itself, and a config should not change because a layer ran.
    config = keras.layers.serialize(layer)
    config.pop("build_config", None)
    return config


def _from_flat_config(config):
    """The constructor arguments of a model saved before SCAN was composed
    (version 0.1: every option flat, the preset only in the name)."""
    from scan_keras.presets import PRESETS

    name = config.get("name") or ""
    prefix, _, rest = name.partition("_")
    if prefix in ("scan", "global") and rest in PRESETS:
        config.setdefault("preset", rest)
    return config
