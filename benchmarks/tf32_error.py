"""How TF32 products change SCAN's similarities, emulated on a CPU.

On GPUs, JAX multiplies float32 matrices in TF32 by default: each operand
keeps 10 of its 23 mantissa bits, either rounded to the nearest value or
truncated (dropped), depending on the code that feeds the tensor cores.
This script computes the Gram form of the attention (as the layer does)
in float64 from operands reduced that way, for the large product of all
regions with all words and for the small Gram products, and prints the
relative error of the similarities against the paper's equations in
float64: max |S - S64| / max |S64|, as `similarity.py` reports it.

    python benchmarks/tf32_error.py
"""

import argparse
import os

import numpy as np
from similarity import LAMBDA_SOFTMAX, literal_similarity, random_embeddings


def tf32(x, rounding):
    """float32 `x` with 10 mantissa bits: `"nearest"` or `"truncate"`."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    if rounding == "nearest":
        # Half of the last kept bit, then drop; ties to even do not matter
        # at this sample size.
        bits = bits + 0x1000
    bits = (bits & ~np.uint64(0x1FFF)).astype(np.uint32)
    return bits.view(np.float32).astype(np.float64)


def operands(rounding):
    """The function that prepares a product's operands."""
    if rounding is None:
        return lambda x: np.asarray(x, np.float64)
    return lambda x: tf32(x, rounding)


def gram_form(images, captions, cross_attn, main=None, gram=None, eps=1e-8):
    """SCAN's similarities (AVG, clipped l2 norm) in the Gram form, float64,
    the operands of the large product reduced by `main` and those of the
    Gram products by `gram` (None, "nearest" or "truncate")."""
    main, gram = operands(main), operands(gram)
    lam = LAMBDA_SOFTMAX[cross_attn]
    s = np.einsum("ird,cwd->icrw", main(images), main(captions))
    x = np.where(s > 0, s, 0.1 * s)
    if cross_attn == "t2i":
        e = np.exp(lam * x / (np.sqrt((x * x).sum(3, keepdims=True)) + eps))
        g = np.einsum("ird,isd->irs", gram(images), gram(images))
        g_e = np.einsum("irs,icsw->icrw", gram(g), gram(e))
        dot, quad, z = (e * s).sum(2), (e * g_e).sum(2), e.sum(2)
        query = np.linalg.norm(captions.astype(np.float64), axis=-1)[None]
    else:
        e = np.exp(lam * x / (np.sqrt((x * x).sum(2, keepdims=True)) + eps))
        h = np.einsum("cwd,cvd->cwv", gram(captions), gram(captions))
        h_e = np.einsum("cvw,icrw->icrv", gram(h), gram(e))
        dot, quad, z = (e * s).sum(3), (e * h_e).sum(3), e.sum(3)
        query = np.linalg.norm(images.astype(np.float64), axis=-1)[:, None]
    relevance = dot / np.maximum(query * np.sqrt(quad), eps * z)
    return relevance.mean(-1)


# label: (large product, Gram products)
CASES = {
    "float32 (no TF32)": (None, None),
    "TF32 nearest, Gram float32": ("nearest", None),
    "TF32 nearest, Gram TF32 nearest": ("nearest", "nearest"),
    "TF32 nearest, Gram TF32 truncated": ("nearest", "truncate"),
    "TF32 truncated, Gram float32": ("truncate", None),
    "TF32 truncated, Gram TF32 truncated": ("truncate", "truncate"),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--captions", type=int, default=60)
    parser.add_argument("--dim", type=int, default=1024)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = random_embeddings(rng, args.images, 36, args.dim)
    captions = random_embeddings(rng, args.captions, 12, args.dim)
    rows = []
    for cross_attn in ("t2i", "i2t"):
        reference = literal_similarity(
            np, images.astype(np.float64), captions.astype(np.float64),
            cross_attn, LAMBDA_SOFTMAX[cross_attn],
        )
        for label, (main_rounding, gram_rounding) in CASES.items():
            sims = gram_form(images, captions, cross_attn, main_rounding, gram_rounding)
            error = np.abs(sims - reference).max() / np.abs(reference).max()
            rows.append((cross_attn, label, error))
    print(f"\n{args.images} images x {args.captions} captions, 36 regions, "
          f"12 words, d = {args.dim}")
    print("| attn | products | rel. error |")
    print("| --- | --- | ---: |")
    for cross_attn, label, error in rows:
        print(f"| {cross_attn} | {label} | {error:.1e} |")


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "jax")
    main()
