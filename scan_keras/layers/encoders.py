"""The image and caption encoders of SCAN: paper section 3.4 "Representing
images with Bottom-Up Attention" and section 3.5 "Representing Sentences".

Both map their input into the same `embed_size`-dimensional space, one
vector per region or word, and l2-normalise each vector so that the dot
products of the attention layer are cosines.
"""

import math

import keras
from keras import ops

from scan_keras.checks import check_positive_int
from scan_keras.layers.norms import l2norm
from scan_keras.layers.validation import check_rank


@keras.saving.register_keras_serializable(package="scan_keras")
class RegionEncoder(keras.layers.Layer):
    """Projects precomputed region features into the joint space.

    Paper section 3.4 "Representing images with Bottom-Up Attention".

    SCAN never sees pixels: each image arrives as the features of its
    detected regions (36 x 2048 from bottom-up attention). One fully
    connected layer maps them, v_r = W f_r + b, then each v_r is
    l2-normalised. Following the reference code, W starts Xavier-uniform
    and b at zero.

    Args:
        embed_size: size h of the joint embedding space.
        no_imgnorm: skip the l2 normalisation of the region vectors.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        features: region features, shape `(batch, n_regions, img_dim)`.
        mask: optional boolean `(batch, n_regions)`; passed on unchanged.

    Returns:
        Region vectors, shape `(batch, n_regions, embed_size)`.

    Example:

    ```python
    import numpy as np
    from scan_keras.layers import RegionEncoder

    features = np.random.rand(4, 36, 2048).astype("float32")
    regions = RegionEncoder(embed_size=1024)(features)
    regions.shape  # (4, 36, 1024), each row of unit length
    ```
    """

    def __init__(self, embed_size: int = 1024, no_imgnorm: bool = False, **kwargs):
        check_positive_int("embed_size", embed_size)
        super().__init__(**kwargs)
        self.embed_size = embed_size
        self.no_imgnorm = bool(no_imgnorm)

    def build(self, features_shape):
        check_rank(features_shape, 3, "features", "(batch, n_regions, img_dim)")
        if features_shape[-1] is None:
            raise ValueError(
                "The last axis of `features` (img_dim) must be known. "
                f"Received: features.shape={tuple(features_shape)}"
            )
        self.fc = keras.layers.Dense(
            self.embed_size,
            kernel_initializer="glorot_uniform",
            bias_initializer="zeros",
            dtype=self.dtype_policy,
            name="fc",
        )
        self.fc.build(features_shape)
        self.built = True

    def call(self, features, mask=None):
        regions = self.fc(features)
        if self.no_imgnorm:
            return regions
        return l2norm(regions, axis=-1)

    def compute_mask(self, features, mask=None):
        return mask

    def compute_output_shape(self, features_shape):
        return tuple(features_shape[:-1]) + (self.embed_size,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"embed_size": self.embed_size, "no_imgnorm": self.no_imgnorm}
        )
        return config


@keras.saving.register_keras_serializable(package="scan_keras")
class CaptionEncoder(keras.layers.Layer):
    """Encodes token ids into one vector per word with a (bi)GRU.

    Paper section 3.5 "Representing Sentences".

    Each word is embedded (`word_dim`, initialised uniform in [-0.1, 0.1]),
    a GRU of `embed_size` units runs over the caption, and for a
    bidirectional GRU the word vector is the mean of the two directions,
    e_w = (h_fwd_w + h_bwd_w) / 2; then each e_w is l2-normalised.
    Token id 0 is padding: it is masked from the GRU (as the reference
    code's packed sequences are), its output is zero, and the mask is
    attached to the output so that `StackedCrossAttention` picks it up.

    The GRU uses PyTorch's recurrence (`reset_after=True`) and PyTorch's
    default initialisation U(-1/sqrt(embed_size), 1/sqrt(embed_size)),
    which the reference code kept. With `num_layers > 1` and
    `bidirectional=True`, inner layers pass both directions on
    concatenated, as `torch.nn.GRU` does; only the last layer averages.

    Args:
        vocab_size: number of token ids, padding (0) included.
        word_dim: size of the word embeddings.
        embed_size: size h of the joint embedding space (GRU units).
        num_layers: number of stacked GRU layers.
        bidirectional: run a second GRU from the end of the caption.
        no_txtnorm: skip the l2 normalisation of the word vectors.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        token_ids: integer ids, shape `(batch, n_words)`, padded with 0.

    Returns:
        Word vectors, shape `(batch, n_words, embed_size)`, with a boolean
        Keras mask `(batch, n_words)` that is True at real words.

    Example:

    ```python
    import numpy as np
    from scan_keras.layers import CaptionEncoder

    token_ids = np.array([[1, 7, 9, 2, 0], [1, 5, 2, 0, 0]])
    encoder = CaptionEncoder(vocab_size=10, word_dim=8, embed_size=16)
    words = encoder(token_ids)
    words.shape  # (2, 5, 16); padded positions are zero
    ```
    """

    def __init__(
        self,
        vocab_size: int,
        word_dim: int = 300,
        embed_size: int = 1024,
        num_layers: int = 1,
        bidirectional: bool = True,
        no_txtnorm: bool = False,
        **kwargs,
    ):
        for name, value in (
            ("vocab_size", vocab_size),
            ("word_dim", word_dim),
            ("embed_size", embed_size),
            ("num_layers", num_layers),
        ):
            check_positive_int(name, value)
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.word_dim = word_dim
        self.embed_size = embed_size
        self.num_layers = num_layers
        self.bidirectional = bool(bidirectional)
        self.no_txtnorm = bool(no_txtnorm)

    def build(self, token_ids_shape):
        check_rank(token_ids_shape, 2, "token_ids", "(batch, n_words)")
        self.embedding = keras.layers.Embedding(
            self.vocab_size,
            self.word_dim,
            embeddings_initializer=keras.initializers.RandomUniform(-0.1, 0.1),
            mask_zero=True,
            dtype=self.dtype_policy,
            name="embed",
        )
        self.embedding.build(token_ids_shape)
        bound = 1.0 / math.sqrt(self.embed_size)
        self.rnn_layers = []
        shape = tuple(token_ids_shape) + (self.word_dim,)
        for k in range(self.num_layers):
            last = k == self.num_layers - 1
            rnn = self._make_gru(bound, name=f"gru_{k}")
            if self.bidirectional:
                rnn = keras.layers.Bidirectional(
                    rnn,
                    backward_layer=self._make_gru(
                        bound, name=f"gru_{k}_reverse", go_backwards=True
                    ),
                    merge_mode="ave" if last else "concat",
                    dtype=self.dtype_policy,
                    name=f"bigru_{k}",
                )
            rnn.build(shape)
            shape = rnn.compute_output_shape(shape)
            self.rnn_layers.append(rnn)
        self.built = True

    def _make_gru(self, bound, name, go_backwards=False):
        def init():
            return keras.initializers.RandomUniform(-bound, bound)

        return keras.layers.GRU(
            self.embed_size,
            return_sequences=True,
            reset_after=True,
            go_backwards=go_backwards,
            kernel_initializer=init(),
            recurrent_initializer=init(),
            bias_initializer=init(),
            dtype=self.dtype_policy,
            name=name,
        )

    def call(self, token_ids):
        mask = self.compute_mask(token_ids)
        words = self.embedding(token_ids)
        for rnn in self.rnn_layers:
            words = rnn(words, mask=mask)
        # Padded steps carry the GRU's last state; zero them so that the
        # output does not depend on how much padding a batch has.
        words = words * ops.cast(mask, words.dtype)[..., None]
        if self.no_txtnorm:
            return words
        return l2norm(words, axis=-1)

    def compute_mask(self, token_ids, mask=None):
        return ops.not_equal(token_ids, 0)

    def compute_output_shape(self, token_ids_shape):
        return tuple(token_ids_shape) + (self.embed_size,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "word_dim": self.word_dim,
                "embed_size": self.embed_size,
                "num_layers": self.num_layers,
                "bidirectional": self.bidirectional,
                "no_txtnorm": self.no_txtnorm,
            }
        )
        return config
