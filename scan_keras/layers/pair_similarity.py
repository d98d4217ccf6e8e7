"""What the similarity layers without attention share.

Each takes the inputs of `StackedCrossAttention` (encoded regions and words,
with their masks) and returns one score per image-caption pair, so any of
them can be a model's similarity layer.
"""

import keras

from scan_keras.checks import check_positive_number
from scan_keras.layers.norms import safe_norm
from scan_keras.layers.validation import check_pair_inputs, check_pair_shapes


class PairSimilarity(keras.layers.Layer):
    """Base of a layer scoring every image against every caption.

    Subclasses implement `score(images, captions, images_mask,
    captions_mask)`; the call checks the inputs first.

    Args:
        eps: floor of the norms in the cosines.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.
    """

    def __init__(self, eps=1e-8, **kwargs):
        check_positive_number("eps", eps)
        super().__init__(**kwargs)
        self.eps = float(eps)
        self.supports_masking = True

    def unit(self, x):
        """`x` divided by its norm along the last axis (floored at eps)."""
        return x / keras.ops.maximum(safe_norm(x, -1, keepdims=True), self.eps)

    def build(self, images_shape, captions_shape):
        check_pair_shapes(images_shape, captions_shape)
        self.built = True

    def call(self, images, captions, images_mask=None, captions_mask=None):
        check_pair_inputs(images, captions, images_mask, captions_mask)
        return self.score(images, captions, images_mask, captions_mask)

    def score(self, images, captions, images_mask, captions_mask):
        raise NotImplementedError

    def compute_mask(self, inputs, previous_mask=None):
        return None

    def compute_output_shape(self, images_shape, captions_shape):
        return (images_shape[0], captions_shape[0])

    def compute_output_spec(self, images, captions, images_mask=None, captions_mask=None):
        return keras.KerasTensor((images.shape[0], captions.shape[0]), dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config["eps"] = self.eps
        return config
