"""Captions of the Karpathy split files, in the precomputed release's order.

The field's splits of Flickr30K and MS-COCO (Karpathy and Fei-Fei, 2015)
ship as `dataset_flickr30k.json` / `dataset_coco.json` (and
`dataset_flickr8k.json`): `{"images": [{"filename", "imgid", "split",
"sentences": [{"raw", "tokens", "sentid"}, ...], "cocoid" and "filepath"
(COCO only)}, ...], "dataset": "coco"}`, `split` being one of "train",
"val", "test", "restval". `import_captions` turns one into the captions
files of the precomputed layout (`precomp.py`), with the image ids and
files beside them, so that features made for those ids line up with the
captions.

The mapping, each list in the JSON's order of images:

| split | images | Flickr30K | MS-COCO |
| --- | --- | --- | --- |
| `train` | "train", then "restval" | 29,000 | 113,287 (82,783 + 30,504) |
| `dev` | "val" | 1,014 | 5,000 |
| `test` | "test" (COCO: its first 1,000, "COCO 1K") | 1,000 | 1,000 |
| `testall` | "test", COCO only ("COCO 5K") | - | 5,000 |

COCO's train order is the one the VSE++ code (which SCAN's code builds on)
reads raw COCO in: every "train" image, then every "restval" image
(`data.py`, `ids['trainrestval']`). The order of the released
`coco_precomp/train_ids.txt` could not be checked against it: compare the
written `train_image_ids.txt` with that file before pairing these captions
with released features.

An image keeps its first 5 sentences, as the reference code did (some COCO
images have 6 or 7). One with fewer is an error, unless `skip_short=True`
leaves it out of its split (its id too, so features made from the ids file
still line up).
"""

import contextlib
import json
import os
import re
import warnings

from scan_keras.atomic import atomic_path
from scan_keras.checks import check_choice, check_positive_int
from scan_keras.data.precomp import SPLITS

KARPATHY_DATASETS = ("coco", "flickr30k", "flickr8k")
# The `split` values of the Karpathy files.
KARPATHY_SPLITS = ("train", "val", "test", "restval")

# Images per split of the standard files, as the precomputed release has them.
KARPATHY_SPLIT_SIZES = {
    "coco": {"train": 113287, "dev": 5000, "test": 1000, "testall": 5000},
    "flickr30k": {"train": 29000, "dev": 1014, "test": 1000},
    "flickr8k": {"train": 6000, "dev": 1000, "test": 1000},
}

# The Karpathy splits of each precomputed split, concatenated in this order.
_SOURCES = {"train": ("train", "restval"), "dev": ("val",), "test": ("test",), "testall": ("test",)}
# COCO's `test` is the first 1,000 test images: fold 0 of testall's 5 x 1K.
COCO_1K_TEST_IMAGES = 1000

# A run of whitespace holding a line break, tab or other non-space
# whitespace: one caption must stay one line of `{split}_caps.txt`. Runs of
# plain spaces stay as the authors wrote them.
_BREAKS = re.compile(r"\s*[^\S ]\s*")


def _clean(raw):
    return _BREAKS.sub(" ", raw).strip()


class _Image:
    """One image of the file, checked: its split, id, file and captions."""

    __slots__ = ("captions", "filename", "image_id", "index", "n_sentences", "split")

    def __init__(self, index, split, image_id, filename, captions, n_sentences):
        self.index = index
        self.split = split
        self.image_id = image_id
        self.filename = filename
        self.captions = captions  # None when the image has too few sentences
        self.n_sentences = n_sentences


def _read_json(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Karpathy split file not found: {path}")
    try:
        # utf-8-sig: a byte-order mark some editors add is skipped.
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON: {err.msg} at line {err.lineno}, "
            f"column {err.colno}."
        ) from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text: {err}") from None


def _dataset_of(path, data):
    """The dataset a file names (`dataset=None`)."""
    dataset = data.get("dataset")
    if dataset is None:
        raise ValueError(
            f"{path} names no dataset (no top-level 'dataset' key): pass "
            f"`dataset`, one of {KARPATHY_DATASETS}."
        )
    if dataset not in KARPATHY_DATASETS:
        raise ValueError(
            f"{path}: unknown 'dataset': expected one of {KARPATHY_DATASETS} "
            f"(or pass `dataset` for a file of the same layout). Received: {dataset!r}"
        )
    return dataset


def _field(path, image, index, key, kinds, what):
    if key not in image:
        raise ValueError(f"{path}: image {index} has no {key!r} key.")
    value = image[key]
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise ValueError(
            f"{path}: image {index}: expected {key!r} to be {what}. "
            f"Received: {value!r:.80}"
        )
    return value


def _read_image(path, index, image, id_key, captions_per_image):
    if not isinstance(image, dict):
        raise ValueError(
            f"{path}: image {index} must be an object. "
            f"Received: {type(image).__name__}"
        )
    split = _field(path, image, index, "split", str, "a string")
    if split not in KARPATHY_SPLITS:
        raise ValueError(
            f"{path}: image {index} has an unknown split: expected one of "
            f"{KARPATHY_SPLITS}. Received: split={split!r}"
        )
    image_id = _field(path, image, index, id_key, int, "an integer image id")
    if image_id < 0:
        raise ValueError(f"{path}: image {index} has a negative {id_key!r}: {image_id}.")
    name = f"image {index} ({id_key} {image_id})"
    filename = _field(path, image, index, "filename", str, "a string")
    if "filepath" in image:
        filename = _field(path, image, index, "filepath", str, "a string") + "/" + filename
    if not filename.strip() or _BREAKS.search(filename):
        raise ValueError(
            f"{path}: {name}: expected a file name without line breaks or "
            f"tabs. Received: {filename!r:.80}"
        )
    sentences = _field(path, image, index, "sentences", list, "a list")
    captions = None
    if len(sentences) >= captions_per_image:
        captions = []
        # Only the kept sentences are read: the reference ignores the rest.
        for j, sentence in enumerate(sentences[:captions_per_image]):
            raw = sentence.get("raw") if isinstance(sentence, dict) else None
            if not isinstance(raw, str):
                problem = (
                    "has no 'raw' key"
                    if isinstance(sentence, dict)
                    else f"is a {type(sentence).__name__}, not an object"
                )
                raise ValueError(f"{path}: {name}, sentence {j} {problem}.")
            caption = _clean(raw)
            if not caption:
                raise ValueError(f"{path}: {name}, sentence {j} is an empty caption.")
            captions.append(caption)
    return _Image(index, split, image_id, filename, captions, len(sentences))


def _check_layout(path, data):
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{path} must hold an object with an 'images' list, as Karpathy's "
            f"dataset_*.json files do. Received: {found}"
        )


def _read_images(path, data, dataset, captions_per_image):
    id_key = "cocoid" if dataset == "coco" else "imgid"
    images, seen = [], {}
    for index, image in enumerate(data["images"]):
        record = _read_image(path, index, image, id_key, captions_per_image)
        if record.image_id in seen:
            raise ValueError(
                f"{path}: images {seen[record.image_id]} and {index} have the "
                f"same {id_key} {record.image_id}."
            )
        seen[record.image_id] = index
        images.append(record)
    if not images:
        raise ValueError(f"{path} holds no images.")
    return images, id_key


def _check_short(path, images, id_key, captions_per_image, skip_short):
    short = [image for image in images if image.captions is None]
    if not short:
        return
    listed = ", ".join(
        f"image {image.index} ({id_key} {image.image_id}, split "
        f"{image.split!r}, {image.n_sentences} sentences)"
        for image in short[:5]
    )
    more = f" and {len(short) - 5} more" if len(short) > 5 else ""
    if not skip_short:
        raise ValueError(
            f"{path}: {len(short)} image(s) have fewer than {captions_per_image} "
            f"sentences: {listed}{more}. Pass skip_short=True to leave them "
            "out of their splits (ids included); no file was written."
        )
    warnings.warn(
        f"{path}: left out {len(short)} image(s) with fewer than "
        f"{captions_per_image} sentences: {listed}{more}.",
        stacklevel=3,
    )


def _assemble(images, dataset):
    """{split: list of kept images}, in the release's order."""
    by_source = {name: [] for name in KARPATHY_SPLITS}
    for image in images:
        by_source[image.split].append(image)
    splits = {}
    for split in SPLITS:
        if split == "testall" and dataset != "coco":
            continue
        kept = [
            image
            for source in _SOURCES[split]
            for image in by_source[source]
            if image.captions is not None
        ]
        if split == "test" and dataset == "coco":
            kept = kept[:COCO_1K_TEST_IMAGES]
        splits[split] = kept
    return splits


def _write_lines(path, lines):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(f"{line}\n" for line in lines))


def import_captions(json_path, out_dir, dataset=None, *, captions_per_image=5, skip_short=False):
    """Writes the captions of a Karpathy split file in the precomputed layout.

    For each split of the release (see the module docstring for which
    images go where, and in which order), writes into `out_dir`:

    - `{split}_caps.txt`: `captions_per_image` captions per image, one a
      line, in image order (caption c belongs to image
      c // captions_per_image): each image's first sentences' `raw` text,
      runs of whitespace holding a line break or tab made one space,
      stripped;
    - `{split}_image_ids.txt`: each image's id, one a line (`cocoid` for
      COCO, else `imgid`), the order `import_features` needs;
    - `{split}_filenames.txt`: each image's file, `filepath/filename` (COCO)
      or `filename`, one a line.

    `{split}_ims.npy` is not written: features come from the released
    folder or `import_features`. Every file is written whole or not at all,
    and none is written unless the whole file reads well. A split without
    images gets no files.

    Args:
        json_path: the Karpathy file, e.g. `dataset_coco.json`.
        out_dir: the folder to write (created if missing).
        dataset: `"coco"`, `"flickr30k"` or `"flickr8k"` (`KARPATHY_DATASETS`);
            None to read the file's `"dataset"` key. COCO also gets
            `testall` and takes ids from `cocoid`.
        captions_per_image: sentences kept per image (5 in the release).
        skip_short: what to do with an image with fewer sentences: False
            (the default) raises an error naming them; True leaves them out
            of their splits, with a warning.

    Returns:
        A dict {split: summary}, each summary a dict with `"images"`,
        `"captions"`, `"images_with_extra_sentences"` (images with more
        than `captions_per_image` sentences, of which the first were kept),
        `"images_skipped"` (images of its Karpathy splits with fewer, left
        out with `skip_short=True`),
        `"expected_images"` (the standard file's count,
        `KARPATHY_SPLIT_SIZES`), `"sources"` (the Karpathy splits it was
        made from) and `"files"` (the paths written). A split whose count
        differs from the standard one is written all the same, with a
        warning that lists the counts.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not JSON (naming the line and column); an
            image lacks a key or has an unknown split, a bad or repeated
            id, or an empty caption (naming the image's index and id, and
            the sentence); an image has too few sentences; unknown
            `dataset`.

    Example:

    ```python
    from scan_keras.data import import_captions, load_split

    summary = import_captions("dataset_flickr30k.json", "data/f30k_precomp")
    summary["test"]["images"]  # 1000
    # test_caps.txt, test_image_ids.txt, test_filenames.txt are written;
    # with features in test_ims.npy (e.g. from import_features):
    split = load_split("data/f30k_precomp", "test")
    ```
    """
    check_positive_int("captions_per_image", captions_per_image)
    if not isinstance(skip_short, bool):
        raise ValueError(f"Expected `skip_short` to be a bool. Received: {skip_short!r}")
    json_path, out_dir = os.fspath(json_path), os.fspath(out_dir)
    if dataset is not None:
        check_choice("dataset", dataset, KARPATHY_DATASETS)
    data = _read_json(json_path)
    _check_layout(json_path, data)
    if dataset is None:
        dataset = _dataset_of(json_path, data)
    images, id_key = _read_images(json_path, data, dataset, captions_per_image)
    _check_short(json_path, images, id_key, captions_per_image, skip_short)
    splits = _assemble(images, dataset)

    contents, summary = {}, {}
    for split, kept in splits.items():
        sources = _SOURCES[split]
        in_sources = [image for image in images if image.split in sources]
        files = {}
        if kept:
            prefix = os.path.join(out_dir, split)
            files = {
                f"{prefix}_caps.txt": [c for image in kept for c in image.captions],
                f"{prefix}_image_ids.txt": [image.image_id for image in kept],
                f"{prefix}_filenames.txt": [image.filename for image in kept],
            }
            contents.update(files)
        summary[split] = {
            "images": len(kept),
            "captions": captions_per_image * len(kept),
            "images_with_extra_sentences": sum(
                image.n_sentences > captions_per_image for image in kept
            ),
            "images_skipped": sum(image.captions is None for image in in_sources),
            "expected_images": KARPATHY_SPLIT_SIZES[dataset][split],
            "sources": sources,
            "files": tuple(files),
        }
    _warn_about_counts(json_path, dataset, summary, captions_per_image)

    os.makedirs(out_dir, exist_ok=True)
    # Every temporary is written before any is renamed: a failure while
    # writing (a full disk) leaves no new file under its final name, and the
    # old ones as they were.
    with contextlib.ExitStack() as stack:
        for path, lines in contents.items():
            _write_lines(stack.enter_context(atomic_path(path)), lines)
    return summary


def _warn_about_counts(path, dataset, summary, captions_per_image):
    extra = {s: v["images_with_extra_sentences"] for s, v in summary.items()}
    if any(extra.values()):
        counts = ", ".join(f"{split} {n}" for split, n in extra.items() if n)
        warnings.warn(
            f"{path}: images with more than {captions_per_image} sentences "
            f"(per split: {counts}) keep their first {captions_per_image}, "
            "as the reference code did.",
            stacklevel=3,
        )
    off = [
        f"{split} {v['images']} (standard: {v['expected_images']})"
        for split, v in summary.items()
        if v["images"] != v["expected_images"]
    ]
    if off:
        warnings.warn(
            f"{path}: the split sizes differ from the standard {dataset} "
            f"file's: {', '.join(off)}. Written as they are; features must "
            "follow the written *_image_ids.txt.",
            stacklevel=3,
        )
