"""The world as a folder: `write_world` writes it, the `load_*` functions read it back.

Besides the released precomputed layout (`{split}_ims.npy`,
`{split}_caps.txt`, `vocab.json`), each split has `{split}_world.npz`
(images and regions) and `{split}_grounding.json` (the ground truth).
"""

import json
import os
import zipfile

import numpy as np

from scan_keras.checks import check_int, is_int
from scan_keras.data.extractor import check_boxes
from scan_keras.data.files import read_captions, write_npz
from scan_keras.data.precomp import check_split_name, split_paths, write_split
from scan_keras.data.vocabulary import Vocabulary, tokenize
from scan_keras.data.world.splits import CAPTIONS_PER_IMAGE, make_world

# The reference code's threshold: words seen 4 times in train + dev.
WORLD_MIN_COUNT = 4
_GROUNDING_FORMAT = "scan-keras world grounding"


def _grounding_path(data_dir, split):
    return os.path.join(os.fspath(data_dir), f"{split}_grounding.json")


def _world_path(data_dir, split):
    return os.path.join(os.fspath(data_dir), f"{split}_world.npz")


def _written(path, split, what):
    """`path`, or a FileNotFoundError naming the `what` file it should be."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Split {split!r} has no {what} file {path} (written by "
            "write_world)."
        )
    return path


def write_world(data_dir, sizes=None, seed=0, min_count=WORLD_MIN_COUNT, **kwargs):
    """Draws the built-in world and writes it as a precomputed-features folder.

    Per split: `{split}_ims.npy` and `{split}_caps.txt` (by `write_split`,
    so `load_split` and the training command read them as they read the
    released data), `{split}_world.npz` (images, boxes, region_objects,
    region_kinds: read with `load_world_images`) and
    `{split}_grounding.json` (the groundings and the objects: read with
    `load_grounding`). And `vocab.json`: `Vocabulary.build` over the train
    and dev captions (all written splits if neither is drawn). The same
    arguments write the same bytes.

    Args:
        data_dir: the folder (created if needed).
        sizes: images per split; see `make_world`.
        seed: integer seed.
        min_count: the fewest occurrences a word needs to enter the
            vocabulary.
        **kwargs: passed to `make_world` (`n_regions`, `min_objects`,
            `max_objects`, `extractor`).

    Returns:
        The `Vocabulary` saved as `vocab.json`.

    Example:

    ```python
    import tempfile
    from scan_keras.data import load_grounding, load_split, write_world

    data_dir = tempfile.mkdtemp()
    vocabulary = write_world(data_dir, {"train": 30, "test": 10}, min_count=1)
    load_split(data_dir, "test").images.shape  # (10, 10, 128)
    len(load_grounding(data_dir, "test"))  # 50, one per caption
    ```
    """
    check_int("min_count", min_count, minimum=1)
    world = make_world(sizes, seed=seed, **kwargs)
    data_dir = os.fspath(data_dir)
    for split, part in world.items():
        write_split(data_dir, split, part.features, part.captions)
        arrays = {
            "images": part.images,
            "boxes": part.boxes,
            "region_objects": part.region_objects,
            "region_kinds": part.region_kinds,
        }
        write_npz(_world_path(data_dir, split), arrays)
        record = {
            "format": _GROUNDING_FORMAT,
            "captions_per_image": CAPTIONS_PER_IMAGE,
            "groundings": [
                [[i, list(regions)] for i, regions in g] for g in part.groundings
            ],
            "objects": [
                [{**o, "box": list(o["box"])} for o in objects]
                for objects in part.objects
            ],
        }
        with open(_grounding_path(data_dir, split), "w", encoding="utf-8") as f:
            json.dump(record, f, separators=(",", ":"))
    vocab_splits = [s for s in ("train", "dev") if s in world] or list(world)
    # The world's grammar writes captions that the package's own tokenizer
    # splits as nltk does (tests/test_tokenizers.py): no nltk needed, and
    # the same files with or without it.
    vocabulary = Vocabulary.build(
        [c for s in vocab_splits for c in world[s].captions],
        min_count=min_count,
        tokenizer="regex",
    )
    vocabulary.save(os.path.join(data_dir, "vocab.json"))
    return vocabulary


def _read_grounding_record(data_dir, split):
    check_split_name(split)
    path = _written(_grounding_path(data_dir, split), split, "grounding")
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if (
        not isinstance(record, dict)
        or record.get("format") != _GROUNDING_FORMAT
        or not isinstance(record.get("groundings"), list)
        or not isinstance(record.get("objects"), list)
    ):
        raise ValueError(
            f"{path} is not a grounding file of write_world: expected an object "
            f"with 'format': {_GROUNDING_FORMAT!r}, 'groundings' and 'objects'."
        )
    return path, record


def load_grounding(data_dir, split):
    """Reads the word-region ground truth of a split written by `write_world`.

    Checked against the split's captions file: one entry per caption, and
    each word index inside its caption's tokens.

    Args:
        data_dir: the folder.
        split: the split's name.

    Returns:
        A list with one entry per caption: a list of `(word_index,
        regions)` pairs, `regions` a tuple of region indices (as
        `WorldSplit.groundings`).

    Raises:
        FileNotFoundError: the grounding or captions file is missing.
        ValueError: unknown split; the file is not valid JSON or not a
            grounding file; its entry count differs from the captions';
            an entry is malformed or points past its caption.
    """
    path, record = _read_grounding_record(data_dir, split)
    caps_path = split_paths(data_dir, split)[1]
    if not os.path.isfile(caps_path):
        raise FileNotFoundError(
            f"Split {split!r} has {path} but no captions file {caps_path}."
        )
    captions = read_captions(caps_path)
    entries = record["groundings"]
    if len(entries) != len(captions):
        raise ValueError(
            f"{path} holds {len(entries)} groundings, but {caps_path} has "
            f"{len(captions)} captions: expected one grounding per caption."
        )
    groundings = []
    for c, (entry, caption) in enumerate(zip(entries, captions)):
        n_words = len(tokenize(caption))
        pairs = []
        try:
            for word_index, regions in entry:
                if not (
                    is_int(word_index)
                    and 0 <= word_index < n_words
                    and regions
                    and all(is_int(r) and r >= 0 for r in regions)
                ):
                    raise ValueError
                pairs.append((word_index, tuple(regions)))
        except (ValueError, TypeError):
            raise ValueError(
                f"{path}: grounding {c} is malformed or does not fit its caption "
                f"{caption!r} ({n_words} words): expected [[word_index, "
                f"[region, ...]], ...]. Received: {entry!r}"
            ) from None
        groundings.append(pairs)
    return groundings


def load_world_objects(data_dir, split):
    """The objects of each image of a split written by `write_world`.

    Returns:
        A list (one per image) of lists of dicts `{"shape", "colour",
        "size", "box"}`, `box` a tuple, as `WorldSplit.objects`.
    """
    _, record = _read_grounding_record(data_dir, split)
    return [
        [{**o, "box": tuple(o["box"])} for o in objects]
        for objects in record["objects"]
    ]


def load_world_images(data_dir, split):
    """Reads the images and region boxes of a split written by `write_world`.

    Args:
        data_dir: the folder.
        split: the split's name.

    Returns:
        `(images, boxes, region_objects)`: uint8 `(N, H, W, 3)`, int32
        `(N, R, 4)`, int32 `(N, R)`, as in `WorldSplit`.

    Raises:
        FileNotFoundError: the file `{split}_world.npz` is missing.
        ValueError: unknown split; the file is corrupt or lacks an array;
            the arrays' shapes or types disagree with each other or with
            the split's features file; a box lies outside its image.
    """
    check_split_name(split)
    path = _written(_world_path(data_dir, split), split, "world")
    try:
        with np.load(path, allow_pickle=False) as data:
            images, boxes, region_objects = (
                data[name] for name in ("images", "boxes", "region_objects")
            )
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is corrupt or not a world file: {err}") from None
    n = images.shape[0] if images.ndim else -1
    if (
        images.dtype != np.uint8
        or images.ndim != 4
        or images.shape[-1] != 3
        or boxes.dtype != np.int32
        or boxes.ndim != 3
        or boxes.shape[0] != n
        or boxes.shape[-1] != 4
        or region_objects.dtype != np.int32
        or region_objects.shape != boxes.shape[:2]
    ):
        raise ValueError(
            f"{path}: expected images uint8 (N, H, W, 3), boxes int32 (N, R, 4) "
            f"and region_objects int32 (N, R). Received: images {images.dtype} "
            f"{images.shape}, boxes {boxes.dtype} {boxes.shape}, region_objects "
            f"{region_objects.dtype} {region_objects.shape}"
        )
    try:
        check_boxes(images, boxes)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    if (region_objects < -1).any():
        raise ValueError(f"{path}: region_objects holds values below -1.")
    ims_path = split_paths(data_dir, split)[0]
    if os.path.isfile(ims_path):
        features = np.load(ims_path, mmap_mode="r")
        if features.shape[:2] != boxes.shape[:2]:
            raise ValueError(
                f"{path} has {n} images of {boxes.shape[1]} regions, but "
                f"{ims_path} has features of shape {features.shape}."
            )
    return images, boxes, region_objects
