"""The command line of the two-stage search: building and querying an index,
and the `--shortlist` option of `evaluate`. Argument parsing and printing
only; the work is `scan_keras.retrieval`'s.

    scan-keras index build MODEL DATA_DIR --split test --out INDEX
    scan-keras index build MODEL DATA_DIR --out INDEX --dual global --dual-model G.keras \\
        --approximate hnsw --ef-search 256 --store-dtype float16
    scan-keras index query INDEX "a dog catches a frisbee" -k 10 --shortlist 100
    scan-keras index query INDEX --image 12 -k 5
    scan-keras evaluate --data-dir DATA_DIR --split test MODEL --shortlist 100
"""

import os


def add_commands(commands):
    """Adds `scan-keras index build | query` to the `scan-keras` sub-parsers."""
    index = commands.add_parser(
        "index",
        help="two-stage search: a dual-encoder shortlist in FAISS, re-ranked by SCAN",
        description="Build an index of a split (the images' and captions' "
        "dual-encoder vectors in FAISS, their encoded regions and words in "
        "memory-mapped files) and query it: the dual encoder shortlists, "
        "SCAN re-ranks the shortlist. Needs FAISS: "
        'pip install "scan-keras[search]".',
    )
    actions = index.add_subparsers(dest="action", required=True)
    build = actions.add_parser(
        "build", help="index a split",
        description="Encode every image (and caption) of a split once, write "
        "their vectors to a FAISS index and their encoded regions (and "
        "words) to .npy files in OUT, with index.json recording the model, "
        "the data and the sizes.",
    )
    build.add_argument("model", help="the SCAN .keras model that re-ranks")
    build.add_argument("data_dir", help="the folder in the precomputed layout")
    build.add_argument("--split", default="test", help="the split indexed (test)")
    build.add_argument("--out", required=True, help="the index folder")
    build.add_argument(
        "--dual", default="mean", choices=("mean", "global"),
        help="the shortlist's encoder: mean = SCAN's own encoders, regions and "
        "words mean-pooled (default); global = a GlobalEmbedding model (--dual-model)",
    )
    build.add_argument("--dual-model", metavar="MODEL", help="the GlobalEmbedding .keras model of --dual global")
    build.add_argument(
        "--approximate", choices=("hnsw", "ivf"),
        help="an approximate index for large collections (default: exact search)",
    )
    build.add_argument("--hnsw-m", type=int, help="HNSW: links per vector (32)")
    build.add_argument("--ef-construction", type=int, help="HNSW: candidates while building (200)")
    build.add_argument("--ef-search", type=int, help="HNSW: candidates while searching (128)")
    build.add_argument("--nlist", type=int, help="IVF: cells (about 4 sqrt(n))")
    build.add_argument("--nprobe", type=int, help="IVF: cells searched per query (16)")
    build.add_argument(
        "--store-dtype", default="float32", choices=("float32", "float16"),
        help="the stored regions and words (float16: half the disk)",
    )
    build.add_argument("--no-captions", action="store_true", help="index images only (text queries only)")
    build.add_argument("--batch-size", type=int, default=128, help="images encoded at a time (128)")
    build.set_defaults(handler=_build)

    query = actions.add_parser(
        "query", help="rank the indexed images for a caption, or captions for an image",
        description="Shortlist with the dual encoder, re-rank with SCAN, and print the best k.",
    )
    query.add_argument("index", help="the index folder")
    query.add_argument("caption", nargs="?", help="the caption to search with")
    query.add_argument("--image", type=int, help="rank captions for this image index")
    query.add_argument("-k", type=int, help="results shown (10, or the shortlist if smaller)")
    query.add_argument(
        "--shortlist", type=int,
        help="items SCAN re-ranks (100, or the whole collection if smaller)",
    )
    query.add_argument("--model", help="the SCAN model (default: the file the index records)")
    query.add_argument("--dual-model", help="the GlobalEmbedding model of a global index")
    query.set_defaults(handler=_query)


# The index's options: (index kind, parameter of `vector_index`).
_INDEX_OPTIONS = {
    "hnsw_m": ("hnsw", "m"),
    "ef_construction": ("hnsw", "ef_construction"),
    "ef_search": ("hnsw", "ef_search"),
    "nlist": ("ivf", "nlist"),
    "nprobe": ("ivf", "nprobe"),
}


def _load(path):
    import keras

    import scan_keras.models  # noqa: F401  (registers the package's classes)

    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such model file: {path}")
    return keras.saving.load_model(path, compile=False)


def _build(args):
    from scan_keras.retrieval import TwoStageSearch

    if args.dual == "global" and not args.dual_model:
        raise ValueError("--dual global needs --dual-model: a GlobalEmbedding .keras file")
    if args.dual_model and args.dual != "global":
        raise ValueError("--dual-model goes with --dual global")
    params = {}
    for option, (kind, name) in _INDEX_OPTIONS.items():
        value = getattr(args, option)
        if value is not None:
            if kind != args.approximate:
                raise ValueError(f"--{option.replace('_', '-')} applies to --approximate {kind}")
            params[name] = value
    model = _load(args.model)
    dual_model = _load(args.dual_model) if args.dual_model else None
    search = TwoStageSearch.build(
        model, args.data_dir, args.out, split=args.split, dual=args.dual,
        dual_model=dual_model, approximate=args.approximate, params=params,
        store_dtype=args.store_dtype, captions=not args.no_captions,
        batch_size=args.batch_size, model_path=args.model,
        dual_model_path=args.dual_model,
    )
    meta = search.metadata
    print(
        f"indexed {search.n_images} images and {search.n_captions} captions of "
        f"{args.split} in {meta['build_seconds']:.1f} s: {meta['index']['kind']} "
        f"index of {meta['dual']['dim']}-d {args.dual} vectors, regions "
        f"{tuple(meta['store']['regions'])} {meta['store']['dtype']}"
    )
    print(f"written to {search.folder} ({_folder_mb(search.folder):.1f} MB)")
    return 0


def _folder_mb(folder):
    return sum(
        os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder)
    ) / 1e6


def _query(args):
    from scan_keras.retrieval import TwoStageSearch

    if (args.caption is None) == (args.image is None):
        raise ValueError("give a caption to rank images, or --image N to rank captions")
    search = TwoStageSearch.load(
        args.index,
        model=_load(args.model) if args.model else None,
        dual_model=_load(args.dual_model) if args.dual_model else None,
    )
    # Defaults fit a small collection; values given are checked as given.
    size = search.n_images if args.caption is not None else search.n_captions
    shortlist = args.shortlist or min(100, size)
    k = args.k or min(10, shortlist)
    if args.caption is not None:
        hits = search.query_text(args.caption, k=k, shortlist=shortlist)
        print(f"images for {args.caption!r} (SCAN on a shortlist of {shortlist}):")
        print(f"{'rank':>4}  {'image':>6}  {'image id':>10}  score")
        for hit in hits:
            image_id = "-" if hit.image_id is None else hit.image_id
            print(f"{hit.rank:>4}  {hit.index:>6}  {image_id:>10}  {hit.score:.4f}")
    else:
        hits = search.query_image(args.image, k=k, shortlist=shortlist)
        print(f"captions for image {args.image} (SCAN on a shortlist of {shortlist}):")
        print(f"{'rank':>4}  {'caption':>7}  score   text")
        for hit in hits:
            print(f"{hit.rank:>4}  {hit.index:>7}  {hit.score:.4f}  {hit.caption or '-'}")
    return 0


# --- `scan-keras evaluate --shortlist K` -----------------------------------


def add_evaluate_options(evaluate):
    """Adds `--shortlist`, `--dual` and `--dual-model` to `evaluate`."""
    evaluate.add_argument(
        "--shortlist", type=int, metavar="K",
        help="recalls of the two-stage search: SCAN re-ranks the K images (and "
        "K captions) the dual encoder shortlists per query; the rest rank after",
    )
    evaluate.add_argument(
        "--dual", default="mean", choices=("mean", "global"),
        help="with --shortlist: the dual encoder (mean: SCAN's own, pooled)",
    )
    evaluate.add_argument("--dual-model", metavar="MODEL", help="with --dual global: the GlobalEmbedding model")


def shortlist_evaluate(args, models, split):
    """`evaluate --shortlist K`: the two-stage recalls of one model; the
    JSON goes beside the full evaluation's (`..._shortlistK.json`)."""
    from scan_keras.retrieval import two_stage_metrics

    if len(models) != 1:
        raise ValueError("--shortlist re-ranks with one model; an ensemble is not supported")
    if (args.dual == "global") != bool(args.dual_model):
        raise ValueError("--dual global goes with --dual-model (and only it)")
    dual_model = _load(args.dual_model) if args.dual_model else None
    metrics, cost = two_stage_metrics(
        models[0], split, args.shortlist, args.protocol, dual=args.dual,
        dual_model=dual_model, batch_size=args.batch_size,
    )
    print(
        f"two-stage: {args.dual} dual encoder, shortlist {args.shortlist}; SCAN "
        f"scored {cost['t2i_pairs']:,} (text queries) and {cost['i2t_pairs']:,} "
        f"(image queries) pairs of {cost['all_pairs']:,}"
    )
    if args.json is None:
        args.json = os.path.join(
            os.path.dirname(os.path.abspath(args.models[0])),
            f"eval_{args.split}_{args.protocol}_shortlist{args.shortlist}.json",
        )
    return {**metrics, "shortlist": args.shortlist, "dual": args.dual, **cost}
