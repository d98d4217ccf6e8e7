"""Sum-Max: every word meets every region, without attention.

The paper's Table 3 ("Effect of the attention") asks what the attention
adds over simply matching each word with its most similar region. Sum-Max
scores a pair by that: in the text-to-image direction, each word keeps
the cosine of the region closest to it and the pair's score is the sum
over words; in the image-to-text direction, each region keeps its closest
word and the sum runs over regions.

    t2i:  score(i, c) = sum_w max_r cosine(v_ir, e_cw)
    i2t:  score(i, c) = sum_r max_w cosine(v_ir, e_cw)

It is hard attention (all the weight on one region) with sum pooling, and
the same late interaction that ColBERT calls MaxSim.
"""

import keras
from keras import ops

from scan_keras.checks import check_choice
from scan_keras.layers.options import CROSS_ATTNS
from scan_keras.layers.pair_similarity import PairSimilarity


@keras.saving.register_keras_serializable(package="scan_keras")
class SumMaxSimilarity(PairSimilarity):
    """Sum over words (or regions) of the best cosine on the other side.

    The paper's Sum-Max baseline. It takes the same inputs as
    `StackedCrossAttention`, so either can be a model's similarity layer.
    Every word-region cosine is formed at once: memory grows as
    `I x R x C x W`.

    Shapes: I images of R regions, C captions of W words, d features.

    Args:
        cross_attn: `"t2i"` (each word takes its best region, summed over
            words) or `"i2t"` (each region takes its best word, summed
            over regions).
        eps: floor of the norms in the cosine.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        images: encoded regions, shape `(I, R, d)`.
        captions: encoded words, shape `(C, W, d)`.
        images_mask: optional boolean `(I, R)`, True for real regions.
        captions_mask: optional boolean `(C, W)`, True for real words;
            filled in from a Keras mask such as `CaptionEncoder`'s.

    Returns:
        The similarity matrix, shape `(I, C)`.

    Example:

    ```python
    import numpy as np
    from scan_keras.layers import SumMaxSimilarity

    images = np.random.normal(size=(2, 36, 64)).astype("float32")
    captions = np.random.normal(size=(3, 12, 64)).astype("float32")
    captions_mask = np.arange(12)[None, :] < np.array([[12], [7], [9]])
    sims = SumMaxSimilarity("t2i")(images, captions, captions_mask=captions_mask)
    sims.shape  # (2, 3)
    ```
    """

    def __init__(self, cross_attn="t2i", eps=1e-8, **kwargs):
        check_choice("cross_attn", cross_attn, CROSS_ATTNS)
        super().__init__(eps=eps, **kwargs)
        self.cross_attn = cross_attn

    def score(self, images, captions, images_mask, captions_mask):
        n_images, n_regions = ops.shape(images)[0], ops.shape(images)[1]
        n_captions, n_words = ops.shape(captions)[0], ops.shape(captions)[1]
        # One product of all regions with all words: (I R, C W).
        cosines = ops.matmul(
            ops.reshape(self.unit(images), (-1, ops.shape(images)[-1])),
            ops.transpose(ops.reshape(self.unit(captions), (-1, ops.shape(captions)[-1]))),
        )
        cosines = ops.reshape(cosines, (n_images, n_regions, n_captions, n_words))
        # The side that is maximised over loses its padding to a value below
        # any cosine; the side that is summed over loses it to zero.
        t2i = self.cross_attn == "t2i"
        best_over, summed = (images_mask, captions_mask) if t2i else (captions_mask, images_mask)
        if best_over is not None:
            keep = best_over[:, :, None, None] if t2i else best_over[None, None, :, :]
            cosines = ops.where(keep, cosines, ops.cast(-2.0, cosines.dtype))
        best = ops.max(cosines, axis=1 if t2i else 3)  # t2i: (I, C, W); i2t: (I, R, C)
        if summed is not None:
            weights = ops.cast(summed, best.dtype)
            best = best * (weights[None, :, :] if t2i else weights[:, :, None])
        return ops.sum(best, axis=2 if t2i else 1)

    def get_config(self):
        config = super().get_config()
        config["cross_attn"] = self.cross_attn
        return config
