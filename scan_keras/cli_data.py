"""The command line for your own data: importing features and captions into
the precomputed layout, and querying a trained model. Argument parsing and
printing only; the work is `scan_keras.data` and `scan_keras.search`'s.

    scan-keras import-captions dataset_flickr30k.json --out data/mine
    scan-keras import-features --tsv feats.tsv --ids data/mine/test_image_ids.txt \\
        --out data/mine --split test
    scan-keras query MODEL DATA_DIR --split test "a dog catches a frisbee"
    scan-keras query MODEL DATA_DIR --split test --image 12 -k 5
    scan-keras query MODEL DATA_DIR "a dog" --explain why.png --images photos/
"""


def add_commands(commands):
    """Adds this module's commands to the `scan-keras` sub-parsers."""
    features = commands.add_parser(
        "import-features",
        help="region features from bottom-up-attention TSV files, for one split",
        description="Read the TSV files of the bottom-up-attention extractor "
        "(image_id, image_w, image_h, num_boxes, boxes, features; base64 "
        "float32) and write the split's features in the order of its id list: "
        "{split}_ims.npy, {split}_boxes.npy, {split}_image_ids.txt, "
        "{split}_image_sizes.npy. Streams: memory does not grow with the input. "
        "Written under temporary names and renamed when every image was "
        "found: an interrupted import leaves no file that looks complete.",
    )
    features.add_argument("--tsv", action="append", required=True, help="a TSV file (repeat for several)")
    features.add_argument(
        "--ids", required=True,
        help="the split's image ids, one per line (e.g. {split}_image_ids.txt "
        "written by import-captions)",
    )
    features.add_argument("--out", required=True, help="the data folder")
    features.add_argument("--split", required=True, help="train, dev, test or testall")
    features.add_argument(
        "--num-boxes", type=int,
        help="pad every image to this many regions (for extractors with a "
        "varying number of boxes); without it, varying counts are an error",
    )
    features.set_defaults(handler=_import_features)

    captions = commands.add_parser(
        "import-captions",
        help="captions from a Karpathy split file (dataset_coco.json, dataset_flickr30k.json)",
        description="Write {split}_caps.txt (5 captions per image), "
        "{split}_image_ids.txt and {split}_filenames.txt for every split of "
        "the precomputed release, in its order: train (train + restval), dev "
        "(val), test, and testall for COCO. Images with more than 5 captions "
        "keep their first 5, as the reference code does; they are counted.",
    )
    captions.add_argument("json", help="the Karpathy split file")
    captions.add_argument("--out", required=True, help="the data folder")
    captions.add_argument("--dataset", help="coco, flickr30k or flickr8k (default: the file's)")
    captions.add_argument(
        "--skip-short", action="store_true",
        help="leave out images with fewer than 5 captions instead of stopping",
    )
    captions.set_defaults(handler=_import_captions)

    query = commands.add_parser(
        "query",
        help="rank a split's images for a caption, or its captions for an image",
        description="Rank the images of a split for a free-text caption (or, "
        "with --image, the split's captions for one image) with a trained "
        "model, and print the top k with their scores. --explain writes the "
        "figure of each word's attention over the best image's regions, on "
        "the photo when --images holds it, else on an outline of the boxes.",
    )
    query.add_argument("model", help="a .keras model saved by scan-keras")
    query.add_argument("data_dir", help="the folder in the precomputed layout")
    query.add_argument("caption", nargs="?", help="the caption to search with")
    query.add_argument("--split", default="test", help="the split searched (test)")
    query.add_argument("--image", type=int, help="rank captions for this image index")
    query.add_argument("-k", type=int, default=10, help="results shown (10)")
    query.add_argument(
        "--explain", metavar="FIGURE",
        help="write the best match's word-region attention figure (PNG, PDF, ...)",
    )
    query.add_argument("--images", metavar="DIR", help="the split's photos, for --explain")
    query.set_defaults(handler=_query)


def _import_features(args):
    from scan_keras.data import import_features, read_image_ids

    summary = import_features(
        args.tsv, read_image_ids(args.ids), args.out, args.split,
        num_boxes=args.num_boxes,
    )
    print(
        f"{args.split}: {summary['images']} images of {summary['n_regions']} "
        f"regions x {summary['img_dim']} features from {summary['lines']} lines "
        f"({summary['skipped']} of other images skipped) in "
        f"{summary['seconds']:.1f} s, written to {args.out}"
    )
    return 0


def _import_captions(args):
    from scan_keras.data import import_captions

    summary = import_captions(
        args.json, args.out, dataset=args.dataset, skip_short=args.skip_short
    )
    for split, counts in summary.items():
        extra = counts["images_with_extra_sentences"]
        print(
            f"{split}: {counts['images']} images, {counts['captions']} captions"
            + (f" ({extra} images kept their first 5 of more)" if extra else "")
        )
    print(f"written to {args.out}")
    return 0


def _query(args):
    import keras

    import scan_keras  # noqa: F401  (registers the package's classes)
    from scan_keras.search import Collection

    if (args.caption is None) == (args.image is None):
        raise ValueError("give a caption to rank images, or --image N to rank captions")
    model = keras.saving.load_model(args.model)
    collection = Collection(model, args.data_dir, args.split)
    if args.caption is not None:
        hits = collection.rank_images(args.caption, k=args.k)
        print(f"images of {args.split} for {args.caption!r}:")
        print(f"{'rank':>4}  {'image':>6}  {'image id':>10}  score")
        for hit in hits:
            image_id = "-" if hit.image_id is None else hit.image_id
            print(f"{hit.rank:>4}  {hit.index:>6}  {image_id:>10}  {hit.score:.4f}")
        explained = (hits[0].index, args.caption)
    else:
        hits = collection.rank_captions(args.image, k=args.k)
        print(f"captions of {args.split} for image {args.image}:")
        print(f"{'rank':>4}  {'caption':>7}  score   text")
        for hit in hits:
            print(f"{hit.rank:>4}  {hit.index:>7}  {hit.score:.4f}  {hit.caption}")
        explained = (args.image, hits[0].caption)
    if args.explain:
        collection.explain(*explained, path=args.explain, images_dir=args.images)
        print(f"attention of {explained[1]!r} over image {explained[0]}: {args.explain}")
    return 0
