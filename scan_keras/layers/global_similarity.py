"""The global-embedding baseline's similarity: pool first, then compare.

Before SCAN, image-text matching embedded a whole image and a whole
caption as one vector each and compared them. VSE++ (Faghri et al., BMVC
2018) took the image vector from a CNN and the caption vector from a GRU's
last state; this layer pools SCAN's own encoders instead, so the two
differ only in how regions and words meet: here the regions are averaged
into one image vector and the words into one caption vector before any
comparison, so no word can single out a region.

    score(i, c) = cosine(mean_r v_ir, mean_w e_cw)
"""

import keras
from keras import ops

from scan_keras.layers.pair_similarity import PairSimilarity


def _masked_mean(x, mask):
    """Mean over axis 1 of `(N, T, d)`, counting only entries where `mask`."""
    if mask is None:
        return ops.mean(x, axis=1)
    weights = ops.cast(mask, x.dtype)[:, :, None]
    count = ops.maximum(ops.sum(weights, axis=1), 1.0)
    return ops.sum(x * weights, axis=1) / count


@keras.saving.register_keras_serializable(package="scan_keras")
class GlobalSimilarity(PairSimilarity):
    """Cosine similarity of mean-pooled regions and mean-pooled words.

    The global-embedding baseline that SCAN is compared with: each
    image becomes the mean of its region vectors, each caption the mean of
    its word vectors (padding excluded), and every image is scored against
    every caption by the cosine of the two. It takes the same inputs as
    `StackedCrossAttention`, so the two are interchangeable in a model.

    Shapes: I images of R regions, C captions of W words, d features.

    Args:
        eps: floor of the norms in the cosine.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        images: encoded regions, shape `(I, R, d)`.
        captions: encoded words, shape `(C, W, d)`.
        images_mask: optional boolean `(I, R)`, True for real regions.
        captions_mask: optional boolean `(C, W)`, True for real words;
            filled in from a Keras mask such as `CaptionEncoder`'s.

    Returns:
        The similarity matrix, shape `(I, C)`, each entry in [-1, 1].

    Example:

    ```python
    import numpy as np
    from scan_keras.layers import GlobalSimilarity

    images = np.random.normal(size=(2, 36, 64)).astype("float32")
    captions = np.random.normal(size=(3, 12, 64)).astype("float32")
    captions_mask = np.arange(12)[None, :] < np.array([[12], [7], [9]])
    sims = GlobalSimilarity()(images, captions, captions_mask=captions_mask)
    sims.shape  # (2, 3)
    ```
    """

    def score(self, images, captions, images_mask, captions_mask):
        image = self.unit(_masked_mean(images, images_mask))
        caption = self.unit(_masked_mean(captions, captions_mask))
        return ops.matmul(image, ops.transpose(caption))
