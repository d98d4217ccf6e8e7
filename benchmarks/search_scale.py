"""The two-stage search from a thousand to a million images: latency, build
time, memory and disk, beside SCAN's all-pairs cost.

Synthetic data of the real shapes: 36 encoded regions of 1,024 per image
(unit vectors with a shared low-rank structure, as
`benchmarks/similarity.py` draws them), the image's dual vector their
mean, normalised (the `"mean"` dual encoder). The model is a SCAN of the
real sizes (embed 1,024, words 300, a bidirectional GRU) with random
weights: its caption encoder and attention cost what a trained one's do.
Queries are captions of 12 words drawn from a 1,000-word vocabulary.

For each size in `--sizes`:

- `shortlist` (each index kind of `--kinds`): the FAISS index of the n
  dual vectors alone. Build time, index file size, resident memory, and
  the latency of a text query (caption encoding + index search for 100).
- `two-stage` (sizes up to `--two-stage-max`, index kind
  `--two-stage-kind`): an index folder with the regions memory-mapped from
  disk (`IndexWriter`), queried end to end with `TwoStageSearch.query_text`
  (k = 10 of a shortlist of 100): latency with the store in the page cache
  (`warm`) and evicted before every query (`cold`, `posix_fadvise`), build
  time (writing the store included), folder size, resident memory.
- `all-pairs SCAN`: the model's attention on one caption against all n
  encoded images (a text query without a shortlist), and the whole
  n x 5n matrix; measured up to `--all-pairs-max` images (in memory),
  extrapolated linearly (per query) and quadratically (matrix) beyond,
  from the largest measured size's pairs per second.

Each build and each set of queries runs in a fresh subprocess, so the
queries' resident memory is that of one index opened for queries (`RSS
base` is the process before opening it: Python, NumPy, Keras, the backend
and the model; `of which files` the mapped file pages, which the kernel
can drop). The build's peak resident memory is in the JSON. Latencies are the median and 95th
percentile of `--queries` queries after one warm-up query. The table is
printed last and written as JSON.

    python benchmarks/search_scale.py                      # 1K to 1M: hours on 2 cores
    python benchmarks/search_scale.py --sizes 1000 5000 --queries 10 \\
        --json /tmp/scale.json                             # a quick check

Disk: the two-stage folder needs n x 36 x 1,024 x 4 bytes (14.7 GB at
100,000 images; half with `--store-dtype float16`) in `--tmp-dir`.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REGIONS, DIM, WORDS, VOCAB = 36, 1024, 12, 1000
SHORTLIST, K = 100, 10
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
_BLOCK = 2048  # images generated at a time


def rss_mb():
    """Resident memory of this process in MB: `rss` (now), `peak`, and
    `anon` / `file` (its own memory, and mapped file pages such as the
    store's, which the kernel can drop)."""
    status = {}
    if os.path.exists("/proc/self/status"):
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    status[key] = int(value.split()[0]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rss": status.get("VmRSS", float("nan")), "peak": status.get("VmHWM", peak),
            "anon": status.get("RssAnon", float("nan")),
            "file": status.get("RssFile", float("nan"))}


def synthetic_regions(start, stop, rank=64):
    """Encoded regions of images `start:stop`, `(b, 36, 1024)` float32 unit
    vectors, the same for the same rows whatever the blocks."""
    basis = np.random.default_rng(1234).standard_normal((rank, DIM), dtype=np.float32)
    basis /= np.sqrt(rank)
    rng = np.random.default_rng([start, stop])
    x = rng.standard_normal((stop - start, REGIONS, rank), dtype=np.float32) @ basis
    x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(0.5 / np.sqrt(DIM))
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def pooled(regions):
    v = regions.mean(axis=1)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def make_model():
    import keras

    from scan_keras.data import Vocabulary
    from scan_keras.models import SCAN

    keras.utils.set_random_seed(0)  # the builder's and the queries' processes agree
    words = ["<pad>", "<start>", "<end>", "<unk>"] + [f"w{i}" for i in range(VOCAB)]
    model = SCAN(vocabulary=Vocabulary(words, tokenizer="regex"), img_dim=2048,
                 embed_size=DIM, word_dim=300)
    model.build()
    return model


def captions(n, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(f"w{i}" for i in rng.integers(0, VOCAB, WORDS)) for _ in range(n)]


def latencies(fn, queries, before=None):
    fn(queries[0])
    times = []
    for query in queries:
        if before is not None:
            before()
        started = time.perf_counter()
        fn(query)
        times.append(time.perf_counter() - started)
    times = 1e3 * np.asarray(times)
    return {"median_ms": float(np.median(times)), "p95_ms": float(np.percentile(times, 95))}


def folder_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))


def child_shortlist_build(args):
    from scan_keras.retrieval import vector_index

    n, kind = args.n, args.kind
    params = vector_index.index_params(kind, None, n_total=n)
    started = time.perf_counter()
    index = vector_index.new_index(kind, DIM, params)
    if kind == "ivf":
        size = min(n, vector_index.TRAIN_PER_CELL * params["nlist"])
        sample = np.concatenate([pooled(synthetic_regions(s, min(size, s + _BLOCK)))
                                 for s in range(0, size, _BLOCK)])
        vector_index.train(index, sample)
    for start in range(0, n, _BLOCK):
        vector_index.add(index, pooled(synthetic_regions(start, min(n, start + _BLOCK))))
    path = os.path.join(args.dir, f"{kind}.faiss")
    vector_index.write_index(index, path)
    return {"build_s": time.perf_counter() - started, "disk_bytes": os.path.getsize(path),
            "build_peak_rss_mb": rss_mb()["peak"], "params": params}


def child_shortlist_query(args):
    from keras import ops

    from scan_keras.retrieval import rerank, vector_index
    from scan_keras.retrieval.two_stage import encode_query

    model = make_model()
    base = rss_mb()["rss"]
    params = vector_index.index_params(args.kind, None, n_total=args.n)
    index = vector_index.read_index(os.path.join(args.dir, f"{args.kind}.faiss"))

    def query(caption):
        _, _, vector = rerank.encode_caption(model, encode_query(model.vocabulary, caption))
        vector = ops.convert_to_numpy(vector)
        return vector_index.search(index, args.kind, params, vector, SHORTLIST)

    times = latencies(query, captions(args.queries))
    return {**times, "rss_base_mb": base, "rss_mb": rss_mb()}


def child_two_stage_build(args):
    from scan_keras.retrieval import IndexWriter, vector_index
    from scan_keras.retrieval import metadata as meta

    model = make_model()
    n, out = args.n, os.path.join(args.dir, "index")
    started = time.perf_counter()
    with IndexWriter(out, DIM, (n, REGIONS, DIM), None, args.kind,
                     store_dtype=args.store_dtype) as writer:
        if args.kind == "ivf":
            size = min(n, vector_index.TRAIN_PER_CELL * writer.params["nlist"])
            writer.train(pooled(synthetic_regions(0, size)))
        for start in range(0, n, _BLOCK):
            regions = synthetic_regions(start, min(n, start + _BLOCK))
            writer.add_images(regions, pooled(regions))
        record = meta.model_record(model, dim=DIM)
        writer.finish({
            "model": record, "dual": {"kind": "mean", **record},
            "data": {"data_dir": None, "split": "synthetic", "n_images": n,
                     "n_captions": 0, "captions_per_image": 5},
        })
    return {"build_s": time.perf_counter() - started, "disk_bytes": folder_bytes(out),
            "build_peak_rss_mb": rss_mb()["peak"]}


def child_two_stage_query(args):
    from scan_keras.retrieval import TwoStageSearch

    model = make_model()  # the same seeded weights as the build's
    base = rss_mb()["rss"]
    search = TwoStageSearch.load(os.path.join(args.dir, "index"), model)
    queries = captions(args.queries)

    def query(caption):
        return search.query_text(caption, k=K, shortlist=SHORTLIST)

    def evict():
        fd = os.open(search.regions.path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)

    warm = latencies(query, queries)
    cold = latencies(query, queries, before=evict) if hasattr(os, "posix_fadvise") else {}
    return {"warm": warm, "cold": cold, "rss_base_mb": base, "rss_mb": rss_mb()}


def child_all_pairs(args):
    from scan_keras.retrieval import rerank
    from scan_keras.retrieval.two_stage import encode_query

    model = make_model()
    regions = synthetic_regions(0, args.n)
    queries = captions(max(3, args.queries // 5))

    def query(caption):
        words, mask, _ = rerank.encode_caption(model, encode_query(model.vocabulary, caption))
        return rerank.score_images(model, regions, words, mask)

    return latencies(query, queries)


def run_child(mode, n, kind, args, folder):
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    command = [sys.executable, os.path.abspath(__file__), "--child", mode, "--n", str(n),
               "--kind", kind, "--dir", folder, "--queries", str(args.queries),
               "--store-dtype", args.store_dtype]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode:
        sys.exit(f"{mode} at {n} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "ivf"])
    parser.add_argument("--two-stage-max", type=int, default=100_000)
    parser.add_argument("--two-stage-kind", default="flat")
    parser.add_argument("--all-pairs-max", type=int, default=10_000)
    parser.add_argument("--store-dtype", default="float32", choices=("float32", "float16"))
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--tmp-dir", help="where the indexes are written")
    parser.add_argument("--json", default=os.path.join(RESULTS, "search_scale.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run = {"shortlist-build": child_shortlist_build,
               "shortlist-query": child_shortlist_query, "two-stage-build": child_two_stage_build,
               "two-stage-query": child_two_stage_query,
               "all-pairs": child_all_pairs}[args.child]
        print(json.dumps(run(args)))
        return

    rows = []
    measured = {}
    for n in sorted(args.sizes):
        for kind in args.kinds:
            folder = tempfile.mkdtemp(prefix="search_scale-", dir=args.tmp_dir)
            try:
                built = run_child("shortlist-build", n, kind, args, folder)
                rows.append({"stage": "shortlist", "kind": kind, "n": n, **built,
                             **run_child("shortlist-query", n, kind, args, folder)})
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            print(rows[-1], flush=True)
        if n <= args.two_stage_max:
            folder = tempfile.mkdtemp(prefix="search_scale-", dir=args.tmp_dir)
            try:
                built = run_child("two-stage-build", n, args.two_stage_kind, args, folder)
                rows.append({"stage": "two-stage", "kind": args.two_stage_kind, "n": n, **built,
                             **run_child("two-stage-query", n, args.two_stage_kind, args, folder)})
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            print(rows[-1], flush=True)
        if n <= args.all_pairs_max:
            measured[n] = run_child("all-pairs", n, "flat", args, "")["median_ms"]
    # SCAN's cost grows linearly in n per query and as 5 n^2 for the matrix;
    # beyond the measured sizes, from the largest one's rate.
    largest = max(measured) if measured else None
    for n in sorted(args.sizes):
        if largest is None:
            break
        per_query = measured.get(n, measured[largest] * n / largest)
        rows.append({"stage": "all-pairs SCAN", "kind": "measured" if n in measured else
                     "extrapolated", "n": n, "median_ms": per_query,
                     "matrix_hours": per_query * 5 * n / 1e3 / 3600})

    print(f"\n{REGIONS} regions x {DIM}, text queries of {WORDS} words, k = {K} of a "
          f"shortlist of {SHORTLIST}; store {args.store_dtype}; "
          f"KERAS_BACKEND={os.environ.get('KERAS_BACKEND', 'default')}, {os.cpu_count()} CPUs")
    print("| stage | index | images | median ms | p95 ms | cold median ms | build s | "
          "disk MB | RSS MB (base) | of which files MB | all-pairs matrix h |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        lat = row.get("warm", row)
        cells = [row["stage"], row["kind"], f"{row['n']:,}", f"{lat['median_ms']:.1f}",
                 f"{lat['p95_ms']:.1f}" if "p95_ms" in lat else "-",
                 f"{row['cold']['median_ms']:.1f}" if row.get("cold") else "-",
                 f"{row['build_s']:.1f}" if "build_s" in row else "-",
                 f"{row['disk_bytes'] / 1e6:,.0f}" if "disk_bytes" in row else "-",
                 f"{row['rss_mb']['rss']:,.0f} ({row['rss_base_mb']:,.0f})" if "rss_mb" in row else "-",
                 f"{row['rss_mb']['file']:,.0f}" if "rss_mb" in row else "-",
                 f"{row['matrix_hours']:.2f}" if "matrix_hours" in row else "-"]
        print("| " + " | ".join(cells) + " |")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"store_dtype": args.store_dtype, "cpus": os.cpu_count(),
                   "backend": os.environ.get("KERAS_BACKEND"), "rows": rows}, f, indent=1)
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
