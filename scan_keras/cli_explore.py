"""The command that writes the attention explorer, one HTML file opened
from disk (`scan_keras.explorer`). Argument parsing and printing only.

    scan-keras explore MODEL DATA_DIR --split test --out explorer.html
    scan-keras explore MODEL data/mine --images 20 --images-dir flickr30k_images/
"""

import os


def add_commands(commands):
    """Adds `scan-keras explore` to the `scan-keras` sub-parsers."""
    explore = commands.add_parser(
        "explore",
        help="write the attention explorer: one HTML page to look inside a model",
        description="Write one self-contained HTML file (no server, no "
        "network) in which you choose an image and a caption, hover a word "
        "to see the regions it attends to, move lambda_1 and switch between "
        "t2i and i2t; the page recomputes the attention, the relevances, the "
        "AVG and LSE scores and the rank of the caption's image among the "
        "images it holds. It stores the first N images of the split with "
        "their captions. The split needs region boxes: {split}_boxes.npy "
        "(import-features writes it) or the built-in world's pictures.",
    )
    explore.add_argument("model", help="a .keras SCAN model saved by scan-keras")
    explore.add_argument("data_dir", help="the folder in the precomputed layout")
    explore.add_argument("--split", default="test", help="the split shown (test)")
    explore.add_argument("--out", default="explorer.html", help="the HTML file written (explorer.html)")
    explore.add_argument(
        "--images", type=int,
        help="the first N images of the split, with their captions (default: "
        "100, or the whole split if smaller)",
    )
    explore.add_argument(
        "--images-dir", metavar="DIR",
        help="the split's photos, drawn under the boxes (found through "
        "{split}_filenames.txt or the image ids); without it, the built-in "
        "world's pictures or outlines of the boxes",
    )
    explore.set_defaults(handler=_explore)


def _explore(args):
    import keras

    import scan_keras  # noqa: F401  (registers the package's classes)
    from scan_keras.explorer import write_explorer

    model = keras.saving.load_model(args.model)
    path = write_explorer(
        model, args.data_dir, split=args.split, out=args.out,
        images=args.images, images_dir=args.images_dir,
    )
    size = os.path.getsize(path) / 1e6
    print(f"written to {path} ({size:.1f} MB): open it in a browser")
    return 0
