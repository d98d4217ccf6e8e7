"""Retrieval evaluation with the paper's protocols (section 4 "Experiments").

Given a similarity matrix of images against captions, where caption j
belongs to image j // captions_per_image:

- sentence retrieval (`i2t`, an image queries the captions): the image's
  rank is the best rank among its own captions;
- image retrieval (`t2i`, a caption queries the images): the caption's
  rank is the position of its image.

Ranks are 0-based inside. R@K is the percentage of queries ranked below K,
the median rank is floor(median) + 1 and the mean rank mean + 1, as in the
reference evaluation code. rsum adds the six recalls.

Ties count against the query: a positive tied with a negative is ranked
behind it (ties among an image's own captions do not matter). A model that
scores everything alike thus gets the worst ranks, never perfect ones.
"""

import keras
import numpy as np

from scan_keras.checks import check_positive_int
from scan_keras.jit import compiled, finite_rows, pad_rows
from scan_keras.scoring import similarity_matrix

RECALL_KS = (1, 5, 10)
PROTOCOLS = ("1k", "5fold1k", "5k")
# The images of the split each protocol is defined on (Flickr30K test,
# COCO testall), which a result must have to stand beside the paper's.
PROTOCOL_IMAGES = {"1k": 1000, "5fold1k": 5000, "5k": 5000}
METRIC_NAMES = tuple(
    f"{direction}_{name}"
    for direction in ("i2t", "t2i")
    for name in ("r1", "r5", "r10", "medr", "meanr")
) + ("rsum",)

# Rows of the similarity matrix compared at once: bounds the boolean
# temporary on COCO 5K.
_ROWS_PER_BLOCK = 256


def _check_similarities(sims, captions_per_image):
    sims = np.asarray(sims)
    check_positive_int("captions_per_image", captions_per_image)
    if sims.ndim != 2 or sims.shape[0] == 0:
        raise ValueError(
            "Expected a non-empty similarity matrix of shape "
            f"(n_images, n_captions). Received: sims.shape={sims.shape}"
        )
    if sims.shape[1] != sims.shape[0] * captions_per_image:
        raise ValueError(
            f"{sims.shape[0]} images with {captions_per_image} captions each "
            f"need {sims.shape[0] * captions_per_image} columns. "
            f"Received: sims.shape={sims.shape}"
        )
    if not np.all(np.isfinite(sims)):
        raise ValueError("The similarity matrix contains NaN or infinite values.")
    return sims


def _i2t_ranks(sims, captions_per_image):
    n_images = sims.shape[0]
    own = np.arange(n_images)
    own_scores = sims.reshape(n_images, n_images, captions_per_image)[own, own]
    best = own_scores.max(axis=1)
    # The best own caption is preceded by negatives only: count the
    # captions at or above it, minus the own ones that are.
    own_at_least = (own_scores >= best[:, None]).sum(axis=1)
    ranks = np.empty(n_images, dtype=np.int64)
    for start in range(0, n_images, _ROWS_PER_BLOCK):
        rows = slice(start, start + _ROWS_PER_BLOCK)
        at_least = (sims[rows] >= best[rows, None]).sum(axis=1)
        ranks[rows] = at_least - own_at_least[rows]
    return ranks


def _t2i_ranks(sims, captions_per_image):
    own_image = np.arange(sims.shape[1]) // captions_per_image
    positives = sims[own_image, np.arange(sims.shape[1])]
    return (sims >= positives[None, :]).sum(axis=0) - 1


def i2t_ranks(sims, captions_per_image=5):
    """0-based rank of each image's best-ranked own caption, `(n_images,)`."""
    sims = _check_similarities(sims, captions_per_image)
    return _i2t_ranks(sims, captions_per_image)


def t2i_ranks(sims, captions_per_image=5):
    """0-based rank of each caption's own image, `(n_captions,)`."""
    sims = _check_similarities(sims, captions_per_image)
    return _t2i_ranks(sims, captions_per_image)


def _summarise(ranks, prefix):
    metrics = {
        f"{prefix}_r{k}": 100.0 * float(np.mean(ranks < k)) for k in RECALL_KS
    }
    metrics[f"{prefix}_medr"] = float(np.floor(np.median(ranks)) + 1)
    metrics[f"{prefix}_meanr"] = float(np.mean(ranks) + 1)
    return metrics


def retrieval_metrics(sims, captions_per_image=5):
    """Recall@K, median and mean rank in both directions, and rsum.

    Args:
        sims: NumPy similarity matrix `(n_images, n_images *
            captions_per_image)`; caption j belongs to image
            j // captions_per_image.
        captions_per_image: captions of each image (5 for Flickr30K and
            MS-COCO).

    Returns:
        A dict with `i2t_r1`, `i2t_r5`, `i2t_r10`, `i2t_medr`, `i2t_meanr`,
        the same five for `t2i`, and `rsum`. Recalls are percentages, ranks
        1-based.

    Example:

    ```python
    import numpy as np
    from scan_keras.evaluation import retrieval_metrics

    sims = np.array([[0.9, 0.1, 0.8, 0.3],    # 2 images, 2 captions each
                     [0.2, 0.7, 0.4, 0.6]])
    retrieval_metrics(sims, captions_per_image=2)["i2t_r1"]  # 50.0
    ```
    """
    # Checked once here: the check scans the whole matrix for NaN.
    sims = _check_similarities(sims, captions_per_image)
    metrics = _summarise(_i2t_ranks(sims, captions_per_image), "i2t")
    metrics.update(_summarise(_t2i_ranks(sims, captions_per_image), "t2i"))
    metrics["rsum"] = sum(
        metrics[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in RECALL_KS
    )
    return metrics


def protocol_folds(protocol, n_images):
    """The image ranges a protocol evaluates, as a list of slices.

    `"1k"` (Flickr30K test) and `"5k"` (COCO `testall`) rank the whole split
    at once; `"5fold1k"` (COCO 1K) cuts it into 5 equal folds whose metrics
    are averaged.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"Unknown protocol: expected one of {PROTOCOLS}. "
            f"Received: protocol={protocol!r}"
        )
    if protocol != "5fold1k":
        return [slice(0, n_images)]
    if n_images % 5:
        raise ValueError(
            "The 5fold1k protocol cuts the split into 5 equal folds (COCO "
            f"testall: 5 x 1000 images). Received: {n_images} images"
        )
    size = n_images // 5
    return [slice(k * size, (k + 1) * size) for k in range(5)]


def evaluate_protocol(similarity, n_images, protocol, captions_per_image=5):
    """Runs a protocol: metrics of each fold, averaged over the folds.

    Args:
        similarity: callable `(image_slice, caption_slice) -> sims`, the
            similarity matrix of those images against those captions.
        n_images: number of images in the split.
        protocol: `"1k"`, `"5fold1k"` or `"5k"`.
        captions_per_image: captions of each image.

    Returns:
        The dict of `retrieval_metrics`, averaged over the folds.
    """
    folds = []
    for images in protocol_folds(protocol, n_images):
        captions = slice(
            images.start * captions_per_image, images.stop * captions_per_image
        )
        sims = similarity(images, captions)
        folds.append(retrieval_metrics(sims, captions_per_image))
    return {name: float(np.mean([f[name] for f in folds])) for name in folds[0]}


def average_similarities(*sims):
    """Ensembles models by averaging their similarity matrices (the "t-i + i-t"
    rows of Tables 1-2, paper section 4 "Experiments")."""
    if not sims:
        raise ValueError("average_similarities needs at least one matrix.")
    shapes = {np.shape(s) for s in sims}
    if len(shapes) != 1:
        raise ValueError(
            f"All similarity matrices must have one shape. Received: {shapes}"
        )
    return np.mean(np.stack([np.asarray(s, np.float64) for s in sims]), axis=0)


class _SplitImages:
    """Images `indices` of a split, read when sliced and checked for NaN/inf."""

    def __init__(self, split, indices):
        self.split, self.indices = split, indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, rows):
        return self.split.image_features(self.indices[rows])


def evaluate(models, split, protocol="1k", batch_size=128, verbose="auto"):
    """Recalls of a model, or of an ensemble, on a precomputed split.

    Each model tokenises the captions with its own vocabulary and scores
    all images against all captions (`scoring.similarity_matrix`); an ensemble
    averages the models' matrices before ranking, as the paper's
    "t-i + i-t" rows do.

    Args:
        models: a model with encoders, a similarity layer and a
            `vocabulary` (`scan_keras.models.SCAN`, the global baseline),
            or a list of them.
        split: a `scan_keras.data.PrecompSplit`, e.g.
            `load_split(data_dir, "test")`.
        protocol: `"1k"` (Flickr30K test), `"5fold1k"` (COCO 1K: the mean
            over 5 folds of `testall`) or `"5k"` (all of COCO `testall`).
        batch_size: images encoded at a time.
        verbose: progress bars.

    Returns:
        The dict of `retrieval_metrics`, averaged over the folds.
    """
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    if not models:
        raise ValueError("evaluate needs at least one model.")
    token_ids = []
    for model in models:
        if getattr(model, "vocabulary", None) is None:
            raise ValueError(
                f"Model {model.name!r} has no vocabulary to tokenise the "
                "captions with: create it with `vocabulary=`."
            )
        token_ids.append(model.vocabulary.encode_batch(split.captions))
    cpi = split.captions_per_image

    def similarity(images, captions):
        features = _SplitImages(split, np.arange(images.start, images.stop))
        return average_similarities(
            *[
                similarity_matrix(
                    model, features, ids[captions], batch_size=batch_size,
                    verbose=verbose,
                )
                for model, ids in zip(models, token_ids)
            ]
        )

    return evaluate_protocol(similarity, split.n_images, protocol, cpi)


# --- grounding: does a word attend to the region it names? -----------------

# lambda_1 of the paper's t2i models, used to read a word-to-region
# attention off models that have none of their own (i2t, global).
_T2I_LAMBDA_SOFTMAX = 9.0


def word_region_attention(model, features, token_ids, batch_size=32):
    """Each word's t2i attention over the regions of its own image.

    For pair k, the weights with which caption k's words attend over image
    k's regions (the attention of paper section 3.2 "Text-Image Stacked
    Cross Attention"; Eq. 2 in the package's labels of
    `scan_keras/layers/equations.py`). A t2i model uses its own attention
    layer; for any other model (i2t, the global baseline) the t2i
    attention is computed on its region and word vectors with the
    paper's t2i settings (`lambda_softmax=9`, clipped l2 norm), which
    asks how well its embeddings align words with regions.

    Args:
        model: a model with `encode_images` and `encode_captions`, such as
            `scan_keras.models.SCAN`.
        features: region features of the pairs' images `(n, R, img_dim)`.
        token_ids: the pairs' captions `(n, W)`, 0 for padding.
        batch_size: pairs scored at once.

    Returns:
        float32 NumPy array `(n, W, R)`: row `[k, w]` sums to 1 over the
        regions for real words and is 0 at padding.
    """
    from scan_keras.layers import StackedCrossAttention

    token_ids = np.asarray(token_ids)
    if len(features) != len(token_ids):
        raise ValueError(
            "Expected one caption per image (pairs). Received: "
            f"{len(features)} images and {len(token_ids)} captions"
        )
    layer = getattr(model, "attention", None)
    if not isinstance(layer, StackedCrossAttention) or layer.cross_attn != "t2i":
        raw_feature_norm = getattr(layer, "raw_feature_norm", "clipped_l2norm")
        layer = StackedCrossAttention(
            "t2i",
            lambda_softmax=_T2I_LAMBDA_SOFTMAX,
            raw_feature_norm=raw_feature_norm,
        )

    def pair_attention(features, token_ids):
        regions = model.encode_images(features)
        words, mask = model.encode_captions(token_ids)
        # All pairs of the block, then the diagonal: (b, b, W, R) -> (b, W, R).
        _, attention = layer(
            regions, words, captions_mask=mask, return_attention_scores=True
        )
        # ops.diagonal puts the diagonal last: (W, R, b) -> (b, W, R).
        return keras.ops.moveaxis(
            keras.ops.diagonal(attention, axis1=0, axis2=1), -1, 0
        )

    key = ("word_region_attention", layer.lambda_softmax, layer.raw_feature_norm)
    attend = compiled(model, key, pair_attention)
    out = []
    for start in range(0, len(token_ids), batch_size):
        block = finite_rows(features, start, start + batch_size, rows_are="pairs")
        ids = token_ids[start : start + batch_size]
        attention = attend(pad_rows(block, batch_size), pad_rows(ids, batch_size))
        attention = attention[: len(block)]
        out.append(np.asarray(keras.ops.convert_to_numpy(attention), "float32"))
    return np.concatenate(out, axis=0)


def _check_groundings(groundings, n_captions, lengths, n_regions):
    if len(groundings) != n_captions:
        raise ValueError(
            f"Expected one grounding list per caption ({n_captions}). "
            f"Received: {len(groundings)}"
        )
    for c, pairs in enumerate(groundings):
        for word, regions in pairs:
            if not 0 <= word < lengths[c]:
                raise ValueError(
                    f"Caption {c}: grounded word index {word} is outside its "
                    f"{lengths[c]} words."
                )
            if not regions or not all(0 <= r < n_regions for r in regions):
                raise ValueError(
                    f"Caption {c}, word {word}: expected region indices in "
                    f"[0, {n_regions}). Received: {list(regions)}"
                )


def grounding_scores(attention, groundings):
    """Grounding accuracy from word-to-region attention and ground truth.

    Args:
        attention: `(n_captions, W, R)` weights from `word_region_attention`;
            token position `w + 1` holds word `w` (position 0 is `<start>`).
        groundings: for each caption, a list of `(word_index, regions)`
            pairs: word `word_index` of `tokenize(caption)` names the
            regions `regions` (several for a plural such as "two squares").

    Returns:
        A dict: `accuracy`, the percentage of grounded words whose largest
        weight falls on one of their regions; `attention_mass`, the mean
        percentage of their weight on their regions; `chance`, the
        accuracy of picking a region at random; `n_words`.
    """
    attention = np.asarray(attention)
    n_regions = attention.shape[-1]
    lengths = (attention.sum(axis=-1) > 0).sum(axis=1) - 2  # no <start>, <end>
    _check_groundings(groundings, len(attention), lengths, n_regions)
    hits, mass, chance = [], [], []
    for c, pairs in enumerate(groundings):
        for word, regions in pairs:
            weights = attention[c, word + 1]
            regions = list(regions)
            hits.append(int(np.argmax(weights)) in regions)
            mass.append(float(weights[regions].sum()))
            chance.append(len(regions) / n_regions)
    if not hits:
        raise ValueError("No grounded word: `groundings` holds no pairs.")
    return {
        "accuracy": 100.0 * float(np.mean(hits)),
        "attention_mass": 100.0 * float(np.mean(mass)),
        "chance": 100.0 * float(np.mean(chance)),
        "n_words": len(hits),
    }


def grounding_accuracy(model, split, groundings, batch_size=32):
    """How often a model's words attend most to the regions they name.

    For every caption of `split` with its own image, the t2i attention of
    its words over the image's regions (`word_region_attention`) is
    compared with the ground truth of which region each word names, as
    the built-in world (`scan_keras.data.world`) records it.

    Args:
        model: a model with a vocabulary, such as `SCAN`.
        split: a `PrecompSplit`, e.g. `load_split(data_dir, "test")`.
        groundings: per caption, `(word_index, regions)` pairs, as
            `scan_keras.data.load_grounding` returns them.
        batch_size: pairs scored at once.

    Returns:
        The dict of `grounding_scores`: `accuracy`, `attention_mass`,
        `chance` (all percentages) and `n_words`.
    """
    if getattr(model, "vocabulary", None) is None:
        raise ValueError(
            f"Model {model.name!r} has no vocabulary to tokenise the "
            "captions with: create it with `vocabulary=`."
        )
    if len(groundings) != split.n_captions:
        raise ValueError(
            f"Expected one grounding list per caption of split "
            f"{split.split!r} ({split.n_captions}). Received: {len(groundings)}"
        )
    token_ids = model.vocabulary.encode_batch(split.captions)
    features = _SplitImages(split, split.image_of_caption(np.arange(split.n_captions)))
    attention = word_region_attention(model, features, token_ids, batch_size)
    return grounding_scores(attention, groundings)
