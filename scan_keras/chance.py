"""Chance levels of the retrieval metrics: what a model scores that ranks
the candidates in a random order.

A caption query has one relevant image among `n` images, so its own image
lands in the top K with probability `K / n`. An image query has
`c = captions_per_image` relevant captions among `c * n`, and counts as
found when any of them is in the top K (the best-of-c rule of
`scan_keras.evaluation.retrieval_metrics`): that fails only when all K
places go to the `c * n - c` other captions, so

    i2t R@K = 1 - C(c n - c, K) / C(c n, K).

With 100 test images and 5 captions each this gives i2t R@1, R@5, R@10 of
1.0%, 4.9% and 9.6%, t2i 1%, 5% and 10%, and rsum about 31.6; with 1,000
images, about 3.2. A trained model is compared with these, not with zero.

```python
from scan_keras.chance import chance_metrics

chance_metrics(100)["rsum"]  # 31.56...
```
"""

from math import comb

from scan_keras.checks import check_positive_int

KS = (1, 5, 10)


def chance_recall(n_candidates, n_relevant, k):
    """Probability that a random order puts at least one of `n_relevant`
    items among its first `k` of `n_candidates`."""
    for name, value in (("n_candidates", n_candidates), ("n_relevant", n_relevant), ("k", k)):
        check_positive_int(name, value)
    if n_relevant > n_candidates:
        raise ValueError(
            f"Expected at most `n_candidates` relevant items. Received: "
            f"n_relevant={n_relevant}, n_candidates={n_candidates}"
        )
    k = min(k, n_candidates)
    return 1.0 - comb(n_candidates - n_relevant, k) / comb(n_candidates, k)


def _rank_of_best(n_candidates, n_relevant):
    """Mean and median of the 1-based rank of the best-placed relevant item
    in a random order."""
    # The best of r uniform places among n is at rank m with
    # P(best >= m) = C(n - m + 1, r) / C(n, r); its mean is (n + 1) / (r + 1).
    mean = (n_candidates + 1) / (n_relevant + 1)
    total = comb(n_candidates, n_relevant)
    median = next(
        m for m in range(1, n_candidates + 1)
        if 1.0 - comb(n_candidates - m, n_relevant) / total >= 0.5
    )
    return mean, median


def chance_metrics(n_images, captions_per_image=5, ks=KS):
    """The expected retrieval metrics of random scores.

    Args:
        n_images: images in the evaluated set (the fold: 1,000 for the
            paper's 1K protocols, 5,000 for COCO 5K).
        captions_per_image: relevant captions per image (5).
        ks: the K of the recalls, those of `retrieval_metrics` by default.

    Returns:
        A dict with the keys of `retrieval_metrics`: recalls in percent,
        `rsum` their sum, `*_meanr` the expected mean rank and `*_medr` the
        median of the rank's distribution (what the median over many
        queries tends to).
    """
    check_positive_int("n_images", n_images)
    check_positive_int("captions_per_image", captions_per_image)
    n_captions = n_images * captions_per_image
    metrics = {}
    for prefix, n_candidates, n_relevant in (
        ("i2t", n_captions, captions_per_image),
        ("t2i", n_images, 1),
    ):
        for k in ks:
            metrics[f"{prefix}_r{k}"] = 100.0 * chance_recall(n_candidates, n_relevant, k)
        mean, median = _rank_of_best(n_candidates, n_relevant)
        metrics[f"{prefix}_medr"] = float(median)
        metrics[f"{prefix}_meanr"] = mean
    metrics["rsum"] = sum(metrics[f"{p}_r{k}"] for p in ("i2t", "t2i") for k in ks)
    return metrics
