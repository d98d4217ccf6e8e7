"""The similarity of every image with every caption of a whole set.

`similarity_matrix` works on any model made of an image encoder, a caption
encoder and a similarity layer (`SCAN`, the global baseline): images are
encoded in blocks, captions sorted by length and scored in batches of
similar length, each block through one compiled function (`jit.py`).
Evaluation, validation during training and `SCAN.similarity` call it.
"""

import keras
import numpy as np
from keras import ops

from scan_keras.jit import compiled, finite_rows, pad_rows


def caption_lengths(token_ids):
    """Non-padding tokens per caption, refusing empty captions."""
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
    return lengths


def _store_columns(sims, columns, scores):
    """Writes a block of scores (padded rows dropped) into columns of `sims`."""
    scores = ops.convert_to_numpy(ops.cast(scores, "float32"))
    sims[:, columns] = scores[:, : len(columns)]


def _layer_key(layer):
    # Everything that changes what or how the layer computes: its config
    # and its execution choices, so changing one after a call recompiles.
    execution = getattr(layer, "execution", None)
    return repr((layer.get_config(), execution))


def similarity_matrix(
    model, features, token_ids, batch_size=128, caption_batch_size=128, verbose="auto"
):
    """The similarity of every image with every caption, as NumPy.

    Args:
        model: a model with `encode_images`, `encode_captions` and
            `similarity_layer`, such as `SCAN`.
        features: region features `(n_images, R, img_dim)`; may be a
            memory-mapped array.
        token_ids: padded token ids `(n_captions, W)`; 0 is padding.
        batch_size: images encoded at a time.
        caption_batch_size: captions encoded and scored at a time.
        verbose: show a progress bar (`"auto"`: when the work is large).

    Returns:
        float32 NumPy array `(n_images, n_captions)`.
    """
    token_ids = np.asarray(token_ids)
    lengths = caption_lengths(token_ids)
    n_images = len(features)
    layer = model.similarity_layer

    def score_captions(regions, ids):
        words, words_mask = model.encode_captions(ids)
        return layer(regions, words, captions_mask=words_mask)

    encode_images = compiled(model, "encode_images", model.encode_images)
    score = compiled(model, ("score", _layer_key(layer)), score_captions)
    # Compiled (JAX), each new input shape costs a compilation: pad_rows
    # gives the blocks fixed sizes, so a test set compiles a handful.
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
