"""The paper's recalls of the two-stage search, so that what the shortlist
loses against full SCAN is measured, not guessed.

For each query the two-stage search ranks its shortlisted items by SCAN's
score, and everything the shortlist left out comes after them (in the
dual encoder's order, which a search asked for more results would
follow). `two_stage_matrix` writes that ranking as a matrix of scores that
ranks the same, so the evaluation's own `retrieval_metrics` (ranks, ties
counted against the query, R@K, medr, meanr) applies unchanged; one
matrix per direction, since a caption query's shortlist of images and an
image query's shortlist of captions are different items.

With a shortlist as large as the collection the two-stage ranking is
SCAN's own, and so are the recalls (`tests/test_index.py` checks both).
"""

import time

import numpy as np
from keras import ops

from scan_keras.checks import check_positive_int
from scan_keras.evaluation import RECALL_KS, protocol_folds, retrieval_metrics
from scan_keras.retrieval import rerank
from scan_keras.retrieval.dual import DualEncoder, in_blocks, pool_regions, pool_words

# Queries whose dual scores are sorted at a time (bounds the temporaries).
_QUERY_BLOCK = 1024


def two_stage_matrix(dual_scores, shortlists, scan_scores):
    """Scores whose order along each column is the two-stage ranking.

    Args:
        dual_scores: `(n_items, n_queries)`, the dual encoder's score of
            every item for every query.
        shortlists: int `(n_queries, K)`, the items shortlisted for each
            query (-1 for none, where an approximate index found fewer).
        scan_scores: `(n_queries, K)`, SCAN's scores of those items.

    Returns:
        float64 `(n_items, n_queries)`: column q holds SCAN's scores at
        its shortlisted items and, at every other item, a value below all
        of them that orders those items by their dual score.

    Example:

    ```python
    import numpy as np
    from scan_keras.retrieval import two_stage_matrix

    dual = np.array([[0.9], [0.8], [0.1]])  # 3 items, 1 query
    m = two_stage_matrix(dual, np.array([[0, 1]]), np.array([[0.2, 0.7]]))
    np.argsort(-m[:, 0])  # [1, 0, 2]: SCAN's order, then the rest
    ```
    """
    dual_scores = np.asarray(dual_scores, np.float64)
    shortlists = np.asarray(shortlists)
    scan_scores = np.asarray(scan_scores, np.float64)
    if shortlists.shape != scan_scores.shape or len(shortlists) != dual_scores.shape[1]:
        raise ValueError(
            "Expected `shortlists` and `scan_scores` of shape (n_queries, K) with "
            f"n_queries = dual_scores.shape[1]. Received: dual_scores "
            f"{dual_scores.shape}, shortlists {shortlists.shape}, scan_scores "
            f"{scan_scores.shape}"
        )
    valid = shortlists >= 0
    lowest = np.where(valid, scan_scores, np.inf).min(axis=1)
    lowest = np.where(np.isfinite(lowest), lowest, 0.0)
    # Below the lowest SCAN score by at least 1, in the dual order.
    top = dual_scores.max(axis=0)
    matrix = lowest[None, :] - 1.0 - (top[None, :] - dual_scores)
    queries = np.broadcast_to(np.arange(len(shortlists))[:, None], shortlists.shape)
    matrix[shortlists[valid], queries[valid]] = scan_scores[valid]
    return matrix


def exact_shortlists(dual_scores, k):
    """The `k` items of largest dual score for each query (column), best
    first, ties by item index: what an exact (flat) index returns.

    Returns:
        int64 `(n_queries, k)`.
    """
    n_items, n_queries = dual_scores.shape
    out = np.empty((n_queries, k), np.int64)
    for start in range(0, n_queries, _QUERY_BLOCK):
        block = -np.asarray(dual_scores[:, start : start + _QUERY_BLOCK]).T
        if k < n_items:
            top = np.argpartition(block, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(n_items), block.shape)
        keys = np.take_along_axis(block, top, axis=1)
        order = np.lexsort((top, keys), axis=1)
        out[start : start + len(block)] = np.take_along_axis(top, order, axis=1)
    return out


def _encoded(model, split, images, captions, batch_size):
    """The fold's encoded regions, words and token counts, in memory."""
    features = split.image_features(np.arange(images.start, images.stop))
    regions = np.concatenate(
        [r for _, r in rerank.encoded_images(model, features, batch_size)], axis=0)
    token_ids = model.vocabulary.encode_batch(split.captions[captions])
    width = rerank.caption_width(token_ids)
    blocks = list(rerank.encoded_captions(model, token_ids, width, batch_size * 5))
    words = np.concatenate([w for _, w, _ in blocks], axis=0)
    lengths = np.concatenate([n for _, _, n in blocks], axis=0)
    return features, regions, words, lengths


def _dual_vectors(dual, split, captions, features, regions, words, lengths, batch_size):
    if dual.kind == "mean":  # SCAN's own encodings, pooled
        mask = np.arange(words.shape[1])[None, :] < lengths[:, None]
        return (ops.convert_to_numpy(pool_regions(regions)),
                ops.convert_to_numpy(pool_words(words, mask)))
    ids = dual.model.vocabulary.encode_batch(split.captions[captions])
    return (in_blocks(dual.embed_images, features, batch_size),
            in_blocks(dual.embed_captions, ids, batch_size * 5))


def _fold(model, dual, split, images, captions, shortlists, batch_size, index):
    """Two-stage metrics of one fold, and what they cost."""
    k_images, k_captions = shortlists
    features, regions, words, lengths = _encoded(model, split, images, captions, batch_size)
    image_vectors, caption_vectors = _dual_vectors(
        dual, split, captions, features, regions, words, lengths, batch_size)
    dual_scores = image_vectors @ caption_vectors.T  # (n_images, n_captions)
    if index is None:
        t2i_lists = exact_shortlists(dual_scores, k_images)
        i2t_lists = exact_shortlists(dual_scores.T, k_captions)
    else:
        from scan_keras.retrieval import vector_index

        search = lambda ix, v, k: vector_index.search(ix, index.kind, index.params, v, k)[1]  # noqa: E731
        t2i_lists = search(index.images, caption_vectors, k_images)
        i2t_lists = search(index.captions, image_vectors, k_captions)
    mask = np.arange(words.shape[1])[None, :] < lengths[:, None]
    started = time.perf_counter()
    t2i_scores = np.full(t2i_lists.shape, -np.inf, np.float32)
    for c, items in enumerate(t2i_lists):
        found = items >= 0
        t2i_scores[c, found] = rerank.score_images(
            model, regions[items[found]], words[c : c + 1], mask[c : c + 1], rows=k_images)
    t2i_seconds = time.perf_counter() - started
    started = time.perf_counter()
    i2t_scores = np.full(i2t_lists.shape, -np.inf, np.float32)
    for i, items in enumerate(i2t_lists):
        found = items >= 0
        i2t_scores[i, found] = rerank.score_captions(
            model, regions[i : i + 1], words[items[found]], lengths[items[found]],
            rows=k_captions)
    i2t_seconds = time.perf_counter() - started
    cpi = split.captions_per_image
    t2i = retrieval_metrics(two_stage_matrix(dual_scores, t2i_lists, t2i_scores), cpi)
    i2t = retrieval_metrics(two_stage_matrix(dual_scores.T, i2t_lists, i2t_scores).T, cpi)
    metrics = {**{n: v for n, v in i2t.items() if n.startswith("i2t")},
               **{n: v for n, v in t2i.items() if n.startswith("t2i")}}
    metrics["rsum"] = sum(metrics[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in RECALL_KS)
    n_images, n_captions = dual_scores.shape
    cost = {
        "t2i_pairs": int((t2i_lists >= 0).sum()), "i2t_pairs": int((i2t_lists >= 0).sum()),
        "all_pairs": n_images * n_captions,
        "t2i_rerank_seconds_per_query": t2i_seconds / n_captions,
        "i2t_rerank_seconds_per_query": i2t_seconds / n_images,
    }
    return metrics, cost


def two_stage_metrics(model, split, shortlist=100, protocol="1k", dual="mean",
                      dual_model=None, caption_shortlist=None, index=None,
                      batch_size=128):
    """The paper's recalls of the two-stage search on a split.

    Each caption's images are the `shortlist` best by the dual encoder,
    ranked by SCAN, then the rest; each image's captions likewise, from a
    shortlist of `caption_shortlist` captions.

    Args:
        model: the SCAN model that re-ranks (with its vocabulary).
        split: a `PrecompSplit`.
        shortlist: images shortlisted per caption query.
        protocol: `"1k"`, `"5fold1k"` or `"5k"` (`scan_keras.evaluation`).
        dual: `"mean"` or `"global"` (see `dual.py`).
        dual_model: the `GlobalEmbedding` of `dual="global"`.
        caption_shortlist: captions shortlisted per image query (default
            `shortlist`).
        index: a `TwoStageSearch` of this split to take the shortlists
            from (its kind, exact or approximate, and its dual encoder);
            None: exact shortlists computed here. An index covers the whole
            split, so it takes the `"1k"` and `"5k"` protocols only.
        batch_size: images encoded at a time.

    Returns:
        `(metrics, cost)`: the dict of `retrieval_metrics` averaged over
        the folds, and a dict of pairs scored per direction
        (`t2i_pairs`, `i2t_pairs`, against `all_pairs`) and the re-rank's
        seconds per query, summed (pairs) or averaged (seconds) over folds.
    """
    check_positive_int("shortlist", shortlist)
    caption_shortlist = shortlist if caption_shortlist is None else caption_shortlist
    check_positive_int("caption_shortlist", caption_shortlist)
    if getattr(model, "vocabulary", None) is None:
        raise ValueError(f"Model {model.name!r} has no vocabulary to read the captions with.")
    if index is not None and protocol == "5fold1k":
        raise ValueError(
            "An index covers the whole split: protocol '5fold1k' cuts it into "
            "folds. Use protocol '1k' or '5k', or no index."
        )
    folds = protocol_folds(protocol, split.n_images)
    if index is not None:
        index.check_split(split)
        if model is not index.model:
            from scan_keras.retrieval import metadata

            metadata.check_model(index.metadata, "model", model,
                                 metadata.embed_size(model), "The model")
        if index.captions is None:
            raise ValueError(f"The index {index.folder} holds no captions to rank.")
        model, encoder = index.model, index.dual
    else:
        if dual == "global" and dual_model is None:
            raise ValueError("dual='global' needs `dual_model`: a trained GlobalEmbedding.")
        encoder = DualEncoder(dual_model if dual == "global" else model, dual)
    n_fold = split.n_images // len(folds)
    cpi = split.captions_per_image
    if shortlist > n_fold or caption_shortlist > n_fold * cpi:
        raise ValueError(
            f"Expected shortlists of at most the {n_fold} images and {n_fold * cpi} "
            f"captions ranked per query. Received: shortlist={shortlist}, "
            f"caption_shortlist={caption_shortlist}"
        )
    results, costs = [], []
    for images in folds:
        captions = slice(images.start * cpi, images.stop * cpi)
        metrics, cost = _fold(model, encoder, split, images, captions,
                              (shortlist, caption_shortlist), batch_size, index)
        results.append(metrics)
        costs.append(cost)
    metrics = {name: float(np.mean([r[name] for r in results])) for name in results[0]}
    cost = {name: (sum if name.endswith("pairs") else np.mean)([c[name] for c in costs])
            for name in costs[0]}
    return metrics, {name: float(v) if "seconds" in name else int(v) for name, v in cost.items()}
