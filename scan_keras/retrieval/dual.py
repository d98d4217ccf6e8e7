"""Dual encoders: one vector per image and one per caption, for the shortlist.

SCAN compares every word with every region of every image, so nothing of
an image can be computed before the query arrives. A dual encoder embeds
images and captions apart, one unit vector each, so that the images of a
collection are embedded once and a query costs one inner product per
image, which a vector index answers without even that (FAISS). The
shortlist it returns is then re-ranked by SCAN (`two_stage.py`).

The embeddings, for encoded regions v_r of an image and words e_w of a
caption:

    image   = l2norm(mean_r v_r)
    caption = l2norm(mean_w e_w)       (padding excluded)

which is the score of the global-embedding baseline (`GlobalSimilarity`):
the cosine of the two. Three dual encoders are compared
(`benchmarks/shortlist_recall.py`):

- `"mean"`: SCAN's own encoders, pooled as above; no training beyond
  SCAN's own. The image's regions come from the same encoding that the
  re-rank stage stores, so a build encodes every image once.
- `"global"`: a separately trained `GlobalEmbedding` model, pooled the same
  way (its own similarity is this cosine).
- `"mean"` on a SCAN trained with `global_loss_weight > 0`: one model with
  both heads, whose mean-pooled vectors were trained to match as well.
"""

import numpy as np
from keras import ops

from scan_keras.jit import compiled, pad_rows
from scan_keras.layers.norms import l2norm

DUAL_ENCODERS = ("mean", "global")


def pool_regions(regions):
    """Unit image vectors from encoded regions: `(n, R, d) -> (n, d)`."""
    return l2norm(ops.mean(ops.cast(regions, "float32"), axis=1), axis=-1)


def pool_words(words, mask):
    """Unit caption vectors from encoded words: `(n, W, d), (n, W) -> (n, d)`.

    Padded positions (`mask` False) are left out of the mean.
    """
    weights = ops.cast(mask, "float32")[:, :, None]
    total = ops.sum(ops.cast(words, "float32") * weights, axis=1)
    count = ops.maximum(ops.sum(weights, axis=1), 1.0)
    return l2norm(total / count, axis=-1)


def round_width(token_ids, multiple=8):
    """Token ids cut to their longest caption, rounded up to `multiple`:
    compiled functions then meet few distinct widths."""
    token_ids = np.asarray(token_ids)
    longest = int((token_ids != 0).sum(axis=1).max())
    width = min(token_ids.shape[1], -(-longest // multiple) * multiple)
    if width == token_ids.shape[1] and width % multiple:
        pad = -(-width // multiple) * multiple - width
        return np.pad(token_ids, ((0, 0), (0, pad)))
    return token_ids[:, :width]


def _as_numpy(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float32")


class DualEncoder:
    """One unit vector per image and per caption, from a trained model.

    Args:
        model: the model whose encoders embed: `SCAN` (`kind="mean"`) or
            `GlobalEmbedding` (`kind="global"`).
        kind: one of `DUAL_ENCODERS`, recorded in an index's metadata.

    Example:

    ```python
    import numpy as np
    from scan_keras.models import SCAN
    from scan_keras.retrieval import DualEncoder

    model = SCAN(vocab_size=20, img_dim=16, embed_size=32, word_dim=8)
    dual = DualEncoder(model, "mean")
    dual.embed_images(np.random.rand(4, 5, 16).astype("float32")).shape  # (4, 32)
    dual.embed_captions(np.array([[1, 5, 6, 2], [1, 7, 2, 0]])).shape  # (2, 32)
    ```
    """

    def __init__(self, model, kind="mean"):
        if kind not in DUAL_ENCODERS:
            raise ValueError(
                f"Unknown dual encoder: expected one of {DUAL_ENCODERS}. "
                f"Received: kind={kind!r}"
            )
        self.model = model
        self.kind = kind

    @property
    def dim(self):
        """The size of the vectors."""
        probe = np.zeros((1, 1, self.model.img_dim), "float32")
        return int(self.embed_images(probe).shape[-1])

    def embed_images(self, features):
        """Unit vectors of images, `(n, R, img_dim) -> (n, dim)` float32 NumPy."""
        features = np.asarray(features, "float32")
        fn = compiled(
            self.model, "dual_images",
            lambda x: pool_regions(self.model.encode_images(x)),
        )
        return _as_numpy(fn(features))

    def embed_captions(self, token_ids):
        """Unit vectors of captions, `(n, W) -> (n, dim)` float32 NumPy (0 = padding)."""
        token_ids = round_width(token_ids)
        fn = compiled(self.model, "dual_captions", self._pooled_captions)
        return _as_numpy(fn(token_ids))

    def _pooled_captions(self, token_ids):
        words, mask = self.model.encode_captions(token_ids)
        return pool_words(words, mask)


def in_blocks(embed, rows, block_size):
    """`embed` over `rows` in blocks of `block_size` rows, each padded to
    that size where compiled; returns the concatenated results."""
    out = []
    for start in range(0, len(rows), block_size):
        block = np.asarray(rows[start : start + block_size])
        out.append(embed(pad_rows(block, block_size))[: len(block)])
    return np.concatenate(out, axis=0)
