"""The hinge-based triplet ranking loss of SCAN (paper section 3.3
"Alignment Objective").

On a batch of matching image-caption pairs, with S[i, c] the similarity of
image i and caption c (so the diagonal holds the positives) and margin
alpha:

    sentence retrieval, image i:  [alpha - S[i, i] + S[i, c]]_+ , c != i
    image retrieval, caption c:   [alpha - S[c, c] + S[i, c]]_+ , i != c

VSE++ (Faghri et al., 2018) keeps only the hardest negative of each query
(`max_violation`), which every SCAN result uses.
"""

import keras
from keras import ops

from scan_keras.layers.validation import check_rank


@keras.saving.register_keras_serializable(package="scan_keras")
class ContrastiveLoss(keras.losses.Loss):
    """Bidirectional hinge loss over a batch's similarity matrix.

    Rows are images and columns captions; the diagonal holds the matching
    pairs. The cost is summed (not averaged) over the batch, in both
    directions: each row ranks captions for its image, each column images
    for its caption.

    Args:
        margin: the margin alpha.
        max_violation: count only the hardest negative of each row and
            each column (VSE++) instead of all of them.
        reduction: Keras loss reduction; the cost is already one number,
            so the default `"sum"` returns it unchanged.
        name: name of the loss.
        dtype: dtype of the computation (float32 by default, also under
            mixed precision).

    Call arguments:
        y_true: ignored (the positives are the diagonal); may be `None`.
        y_pred: similarity matrix, shape `(n, n)`.

    Returns:
        A scalar.

    Example:

    ```python
    import numpy as np
    from scan_keras.losses import ContrastiveLoss

    sims = np.array([[0.9, 0.1], [0.8, 0.5]], dtype="float32")
    ContrastiveLoss(margin=0.2)(None, sims)
    # image 1's hardest caption: 0.2 + 0.8 - 0.5 = 0.5; caption 0 is fine,
    # caption 1's hardest image: 0.2 + 0.1 - 0.5 < 0, so the loss is 0.5.
    ```
    """

    def __init__(
        self,
        margin: float = 0.2,
        max_violation: bool = True,
        reduction: str = "sum",
        name: str = "contrastive_loss",
        dtype=None,
    ):
        if not isinstance(margin, (int, float)) or margin < 0:
            raise ValueError(
                "Expected `margin` to be a non-negative number. "
                f"Received: margin={margin!r}"
            )
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = float(margin)
        self.max_violation = bool(max_violation)

    def __call__(self, y_true, y_pred, sample_weight=None):
        # The positives are the diagonal: there are no labels to pass.
        if y_true is None:
            y_true = y_pred
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def call(self, y_true, y_pred):
        check_rank(y_pred.shape, 2, "y_pred", "(n, n)")
        rows, cols = y_pred.shape
        if rows is not None and cols is not None and rows != cols:
            raise ValueError(
                "ContrastiveLoss needs a square similarity matrix whose "
                "diagonal holds the matching pairs. "
                f"Received: y_pred.shape={tuple(y_pred.shape)}"
            )
        positives = ops.diagonal(y_pred)
        index = ops.arange(ops.shape(y_pred)[0])
        is_positive = ops.equal(index[:, None], index[None, :])
        zero = ops.zeros_like(y_pred)
        # cost_s[i, c]: caption c outranks image i's own caption.
        cost_s = ops.relu(self.margin + y_pred - positives[:, None])
        # cost_im[i, c]: image i outranks caption c's own image.
        cost_im = ops.relu(self.margin + y_pred - positives[None, :])
        cost_s = ops.where(is_positive, zero, cost_s)
        cost_im = ops.where(is_positive, zero, cost_im)
        if self.max_violation:
            return ops.sum(ops.max(cost_s, axis=1)) + ops.sum(
                ops.max(cost_im, axis=0)
            )
        return ops.sum(cost_s) + ops.sum(cost_im)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"margin": self.margin, "max_violation": self.max_violation}
        )
        return config
