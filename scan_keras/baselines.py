"""The paper's models without attention (its Table 3, "Effect of the attention").

Each is `SCAN` (the same encoders, loss and training) with another
similarity layer in place of Stacked Cross Attention, so that a difference
in recall between one of them and SCAN is what the attention buys:

- `GlobalEmbedding`: the cosine of mean-pooled regions and mean-pooled
  words (`GlobalSimilarity`); every word and region is merged before any
  comparison.
- `SumMax`: every word takes its most similar region (or every region its
  most similar word) and the cosines are summed (`SumMaxSimilarity`).
"""

import keras

from scan_keras.layers import GlobalSimilarity, SumMaxSimilarity
from scan_keras.models import ATTENTION_ARGS, SCAN


class _WithoutAttention(SCAN):
    """`SCAN` with another similarity layer: refuses the attention's
    options, and makes its layer and name from a preset."""

    NAME_PREFIX = None

    @classmethod
    def make_similarity(cls, cross_attn, dtype=None):
        """The default similarity layer (`cross_attn` for those that use it)."""
        raise NotImplementedError

    def __init__(self, vocab_size=None, vocabulary=None, *, similarity, **kwargs):
        options = sorted(set(kwargs) & set(ATTENTION_ARGS))
        if options:
            raise ValueError(
                f"{type(self).__name__} has no attention: it takes none of "
                f"{options}. Use SCAN for them."
            )
        super().__init__(vocab_size, vocabulary, similarity=similarity, **kwargs)

    @classmethod
    def from_preset(cls, preset, vocabulary=None, vocab_size=None, **overrides):
        """The baseline with the encoders and recipe of one of the paper's
        variants (see `SCAN.from_preset`); `cross_attn` only chooses the
        direction of a similarity that has one."""
        from scan_keras.presets import get_preset

        if isinstance(preset, str):
            preset = get_preset(preset)
        overrides.setdefault("name", f"{cls.NAME_PREFIX}_{preset.name}")
        if "similarity" not in overrides:
            overrides["similarity"] = cls.make_similarity(
                preset.cross_attn, overrides.get("dtype")
            )
        return super().from_preset(preset, vocabulary, vocab_size, **overrides)


@keras.saving.register_keras_serializable(package="scan_keras")
class GlobalEmbedding(_WithoutAttention):
    """The global-embedding baseline: SCAN's encoders without the attention.

    `SCAN` with `similarity=GlobalSimilarity()`: an image is the mean of
    its region vectors, a caption the mean of its word vectors, and a pair
    is scored by their cosine, on the same encoders, loss and training.
    Everything else works as for `SCAN`; the difference in recall between
    the two is what attending word by word buys.

    Args:
        vocab_size: as for `SCAN`.
        vocabulary: as for `SCAN`.
        similarity: the similarity layer, `GlobalSimilarity()` by default.
        **kwargs: the other arguments of `SCAN`, without the attention's
            (`cross_attn`, the lambdas, ...), which it has none of.

    Call arguments:
        inputs: as for `SCAN`.

    Returns:
        The similarity matrix `(B_images, B_captions)`.

    Example:

    ```python
    import numpy as np
    from scan_keras.baselines import GlobalEmbedding

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

    NAME_PREFIX = "global"

    @classmethod
    def make_similarity(cls, cross_attn=None, dtype=None):
        return GlobalSimilarity(dtype=dtype, name="pooling")

    def __init__(self, vocab_size=None, vocabulary=None, *, similarity=None, **kwargs):
        if similarity is None:
            similarity = self.make_similarity(None, kwargs.get("dtype"))
        super().__init__(vocab_size, vocabulary, similarity=similarity, **kwargs)


@keras.saving.register_keras_serializable(package="scan_keras")
class SumMax(_WithoutAttention):
    """The Sum-Max baseline: each word's best region, summed.

    `SCAN` with `similarity=SumMaxSimilarity(cross_attn)`: in the
    text-to-image direction a pair scores the sum over its words of the
    cosine of each word's most similar region; in the image-to-text
    direction, the sum over regions of each region's best word. The same
    encoders, loss and training as `SCAN`.

    Args:
        vocab_size: as for `SCAN`.
        vocabulary: as for `SCAN`.
        cross_attn: `"t2i"` (over words) or `"i2t"` (over regions).
        similarity: the similarity layer, `SumMaxSimilarity(cross_attn)`
            by default.
        **kwargs: the other arguments of `SCAN`, without the attention's
            (the lambdas, `agg_func`, ...), which it has none of.

    Call arguments:
        inputs: as for `SCAN`.

    Returns:
        The similarity matrix `(B_images, B_captions)`.

    Example:

    ```python
    import numpy as np
    from scan_keras.baselines import SumMax

    # Each region keeps its best word (the image-text direction).
    model = SumMax.from_preset("f30k_i2t_avg", vocab_size=20, img_dim=16, embed_size=32)
    features = np.random.rand(3, 5, 16).astype("float32")
    token_ids = np.array([[4, 7, 2, 0], [5, 5, 9, 3], [8, 2, 0, 0]])
    model.similarity(features, token_ids).shape  # (3, 3)
    ```
    """

    NAME_PREFIX = "sum_max"

    @classmethod
    def make_similarity(cls, cross_attn="t2i", dtype=None):
        return SumMaxSimilarity(cross_attn, dtype=dtype, name="sum_max")

    def __init__(
        self, vocab_size=None, vocabulary=None, *, cross_attn="t2i", similarity=None, **kwargs
    ):
        if similarity is None:
            similarity = self.make_similarity(cross_attn, kwargs.get("dtype"))
        super().__init__(vocab_size, vocabulary, similarity=similarity, **kwargs)
