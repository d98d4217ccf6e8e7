"""The shortlist's vector index: FAISS, exact or approximate.

The dual encoder's vectors are unit vectors, so their inner product is
their cosine, and the shortlist of a query is the k vectors of largest
inner product with it (maximum inner-product search). Three kinds of
index answer it:

- `"flat"` (`IndexFlatIP`): exact. A query reads every vector, n x dim
  multiply-adds (100,000 images of 1,024 floats: 0.4 GB read per query);
  right for collections up to about 10^5.
- `"hnsw"` (`IndexHNSWFlat`, Malkov and Yashunin, TPAMI 2018): a graph
  whose nodes are linked to `m` neighbours on each of a few layers; a
  query walks it greedily from the top layer, keeping the `ef_search`
  best candidates. Approximate, logarithmic in n; no training; the links
  cost about 2 x 4 x `m` bytes per vector beside the vectors.
  `ef_construction` is the candidate list while building (better graph,
  slower build).
- `"ivf"` (`IndexIVFFlat`): the vectors are grouped by k-means into
  `nlist` cells (trained on a sample); a query scans the `nprobe` cells
  whose centroids are nearest. Approximate; a query reads about
  nprobe / nlist of the vectors; builds faster than HNSW.

FAISS is an optional dependency (`pip install "scan-keras[search]"`),
imported only when an index is made or read.
"""

import os

import numpy as np

from scan_keras.atomic import atomic_path
from scan_keras.checks import check_positive_int

INDEX_KINDS = ("flat", "hnsw", "ivf")
DEFAULT_PARAMS = {
    "flat": {},
    "hnsw": {"m": 32, "ef_construction": 200, "ef_search": 128},
    # nlist None: about 4 sqrt(n) cells, chosen when the size is known.
    "ivf": {"nlist": None, "nprobe": 16},
}
# Vectors per cell that k-means trains on (FAISS warns below 39).
TRAIN_PER_CELL = 64


def import_faiss():
    """The `faiss` module, or an ImportError that says how to install it."""
    try:
        import faiss
    except ImportError:
        raise ImportError(
            "The shortlist index needs FAISS, which is not installed: "
            'pip install "scan-keras[search]" (or pip install faiss-cpu).'
        ) from None
    return faiss


def index_params(kind, params=None, n_total=None):
    """The full parameters of an index of `kind`: the defaults updated by
    `params`, each checked; `nlist` chosen from `n_total` when not given.

    Returns:
        A dict, stored in the index's metadata.
    """
    if kind not in INDEX_KINDS:
        raise ValueError(
            f"Unknown index kind: expected one of {INDEX_KINDS}. Received: kind={kind!r}"
        )
    params = dict(params or {})
    unknown = sorted(set(params) - set(DEFAULT_PARAMS[kind]))
    if unknown:
        raise ValueError(
            f"A {kind!r} index takes the parameters {sorted(DEFAULT_PARAMS[kind])}. "
            f"Received: {unknown}"
        )
    full = {**DEFAULT_PARAMS[kind], **{k: v for k, v in params.items() if v is not None}}
    if kind == "ivf" and full["nlist"] is None and n_total is not None:
        # Enough vectors per cell to train k-means, about 4 sqrt(n) cells.
        full["nlist"] = max(1, min(int(4 * np.sqrt(n_total)), n_total // 39))
    for name, value in full.items():
        if value is not None:
            check_positive_int(name, value)
    return full


def new_index(kind, dim, params):
    """An empty inner-product index of `kind` over `dim`-vectors.

    An `"ivf"` index must be trained (`train`) before vectors are added.
    """
    faiss = import_faiss()
    check_positive_int("dim", dim)
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    # The factory owns the quantizer: one built by hand must be kept
    # alive by the caller for as long as the index.
    if kind == "hnsw":
        index = faiss.index_factory(dim, f"HNSW{params['m']},Flat", faiss.METRIC_INNER_PRODUCT)
        faiss.downcast_index(index).hnsw.efConstruction = params["ef_construction"]
        return index
    if kind == "ivf":
        return faiss.index_factory(dim, f"IVF{params['nlist']},Flat", faiss.METRIC_INNER_PRODUCT)
    raise ValueError(f"Unknown index kind {kind!r}")


def train(index, sample):
    """Trains `index` on `sample` `(n, dim)` where it needs training (IVF)."""
    if not index.is_trained:
        index.train(np.ascontiguousarray(sample, dtype="float32"))


def add(index, vectors):
    """Appends `vectors` `(n, dim)`; their ids continue from `index.ntotal`."""
    index.add(np.ascontiguousarray(vectors, dtype="float32"))


def search(index, kind, params, queries, k):
    """The `k` nearest vectors of each query by inner product.

    Args:
        index: a FAISS index.
        kind: its kind, one of `INDEX_KINDS`.
        params: its parameters (`index_params`); `ef_search` and
            `nprobe` apply here.
        queries: float32 `(q, dim)`.
        k: results per query.

    Returns:
        `(scores, ids)`, each `(q, k)`, best first. An approximate index
        may find fewer than `k` (ids -1, scores -inf).
    """
    faiss = import_faiss()
    inner = faiss.downcast_index(index)
    if kind == "hnsw":
        # The walk keeps ef candidates: fewer than k would cut the list.
        inner.hnsw.efSearch = max(params["ef_search"], k)
    elif kind == "ivf":
        inner.nprobe = min(params["nprobe"], inner.nlist)
    scores, ids = index.search(np.ascontiguousarray(queries, dtype="float32"), k)
    scores = np.where(ids < 0, -np.inf, scores)
    return scores, ids.astype(np.int64)


def write_index(index, path):
    """Writes `index` to `path`, whole or not at all."""
    faiss = import_faiss()
    with atomic_path(path) as tmp:
        faiss.write_index(index, tmp)


def read_index(path, mmap=True):
    """Reads an index written by `write_index`.

    Args:
        path: the file.
        mmap: map the file instead of reading it (FAISS reads the vectors
            of flat and IVF indexes from the page cache then).
    """
    faiss = import_faiss()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No index file: {path}")
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    try:
        return faiss.read_index(os.fspath(path), flags)
    except RuntimeError as err:
        raise ValueError(f"{path} is not a readable FAISS index: {err}") from None
