"""The re-rank stage: SCAN's similarity layer on a query and its shortlist.

The layer scores every image of a block against every caption of a
block; given one caption and the k shortlisted images' stored regions it
computes exactly the k scores of the full matrix's column for that
caption, and nothing else (k x R x W region-word products instead of
n x R x W). An image query is the mirror: one image's regions against
the k shortlisted captions' stored words.

Each function is compiled once per input shape (`jit.compiled`): the
shortlist is padded to a fixed number of rows and captions to a width
that is a multiple of 8, so a stream of queries reuses a few compiled
programs.
"""

import numpy as np
from keras import ops

from scan_keras.jit import compiled, pad_rows
from scan_keras.retrieval.dual import pool_words, round_width


def _layer_key(layer):
    # Everything that changes what or how the layer computes: changing an
    # option after a call compiles anew.
    return repr((layer.get_config(), getattr(layer, "execution", None)))


def encode_caption(model, token_ids):
    """One caption's encoded words, mask and pooled vector.

    Args:
        model: a SCAN-like model.
        token_ids: `(1, W)` token ids.

    Returns:
        `(words (1, W', d), mask (1, W'), pooled (1, d))` as backend
        tensors; `pooled` is the `"mean"` dual encoder's vector.
    """

    def encode(ids):
        words, mask = model.encode_captions(ids)
        return words, mask, pool_words(words, mask)

    return compiled(model, "rerank_caption", encode)(round_width(token_ids))


def encode_image(model, features):
    """Encoded regions of images `(n, R, img_dim) -> (n, R, d)`."""
    fn = compiled(model, "rerank_image", model.encode_images)
    return fn(np.asarray(features, "float32"))


def score_images(model, regions, words, mask, rows=None):
    """SCAN's scores of one caption against `k` images' encoded regions.

    Args:
        model: the model whose `similarity_layer` scores.
        regions: float32 `(k, R, d)`, e.g. gathered from an `EncodedStore`.
        words, mask: the caption's encoded words `(1, W, d)` and mask
            `(1, W)` (`encode_caption`).
        rows: pad the images to this many rows where compiled (the
            shortlist's length), so every query has one shape.

    Returns:
        float32 NumPy `(k,)`.
    """
    layer = model.similarity_layer

    def score(regions, words, mask):
        return layer(regions, words, captions_mask=mask)[:, 0]

    fn = compiled(model, ("rerank_images", _layer_key(layer)), score)
    k = len(regions)
    scores = fn(pad_rows(regions, rows or k), words, mask)
    return np.asarray(ops.convert_to_numpy(scores), "float32")[:k]


def score_captions(model, regions, words, lengths, rows=None):
    """SCAN's scores of one image against `k` captions' encoded words.

    Args:
        model: the model whose `similarity_layer` scores.
        regions: the image's encoded regions `(1, R, d)`.
        words: float32 `(k, W, d)`, e.g. gathered from an `EncodedStore`.
        lengths: int `(k,)`, each caption's number of tokens.
        rows: pad the captions to this many rows where compiled.

    Returns:
        float32 NumPy `(k,)`.
    """
    layer = model.similarity_layer
    lengths = np.asarray(lengths)
    # Stored words are padded to the collection's longest caption: cut to
    # the shortlist's longest (a multiple of 8), padding is masked anyway.
    width = min(words.shape[1], -(-int(lengths.max()) // 8) * 8)
    words = words[:, :width]
    mask = np.arange(width)[None, :] < lengths[:, None]

    def score(regions, words, mask):
        return layer(regions, words, captions_mask=mask)[0]

    fn = compiled(model, ("rerank_captions", _layer_key(layer)), score)
    k = len(words)
    scores = fn(regions, pad_rows(words, rows or k), pad_rows(mask, rows or k))
    return np.asarray(ops.convert_to_numpy(scores), "float32")[:k]


def caption_width(token_ids, multiple=8):
    """The stored width of a collection's words: its longest caption,
    rounded up to `multiple`."""
    longest = int((np.asarray(token_ids) != 0).sum(axis=1).max())
    return -(-longest // multiple) * multiple


def encoded_images(model, features, batch_size=128):
    """Yields `(start, regions)`: the encoded regions of `features` in
    blocks of `batch_size` images, float32 NumPy `(b, R, d)`.

    `features` may be a `PrecompSplit` (its `image_features` checks each
    block for NaN and infinity) or an array.
    """
    n = features.n_images if hasattr(features, "image_features") else len(features)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        if hasattr(features, "image_features"):
            block = features.image_features(np.arange(start, stop))
        else:
            block = np.asarray(features[start:stop], "float32")
        regions = encode_image(model, pad_rows(block, batch_size))
        yield start, np.asarray(ops.convert_to_numpy(regions), "float32")[: stop - start]


def encoded_captions(model, token_ids, width, batch_size=128):
    """Yields `(start, words, lengths)`: the encoded words of `token_ids`
    in blocks of `batch_size` captions, float32 NumPy `(b, width, d)`
    (zero past each caption's end), and each caption's token count."""
    token_ids = np.asarray(token_ids)

    def encode(ids):
        return model.encode_captions(ids)[0]

    fn = compiled(model, "rerank_captions_block", encode)
    for start in range(0, len(token_ids), batch_size):
        ids = token_ids[start : start + batch_size]
        words = fn(pad_rows(round_width(ids), batch_size))
        words = np.asarray(ops.convert_to_numpy(words), "float32")[: len(ids), :width]
        if words.shape[1] < width:
            words = np.pad(words, ((0, 0), (0, width - words.shape[1]), (0, 0)))
        yield start, words, (ids != 0).sum(axis=1)
