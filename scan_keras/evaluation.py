"""Retrieval evaluation with the paper's protocols (section 4).

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

import numpy as np

RECALL_KS = (1, 5, 10)
PROTOCOLS = ("1k", "5fold1k", "5k")
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
    if not isinstance(captions_per_image, int) or captions_per_image < 1:
        raise ValueError(
            "Expected `captions_per_image` to be a positive integer. "
            f"Received: captions_per_image={captions_per_image!r}"
        )
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
    """Ensembles models by averaging their similarity matrices (paper 4.3)."""
    if not sims:
        raise ValueError("average_similarities needs at least one matrix.")
    shapes = {np.shape(s) for s in sims}
    if len(shapes) != 1:
        raise ValueError(
            f"All similarity matrices must have one shape. Received: {shapes}"
        )
    return np.mean(np.stack([np.asarray(s, np.float64) for s in sims]), axis=0)
