"""Region features from the bottom-up-attention extractor's TSV files.

The released precomputed folders were made from the TSV files of the
bottom-up-attention extractor (Anderson et al., 2018). Such a file is
tab-separated, without a header, one image a line, in the columns

    image_id, image_w, image_h, num_boxes, boxes, features

where `boxes` is the base64 of float32 `(num_boxes, 4)` (x1, y1, x2, y2 in
pixels) and `features` the base64 of float32 `(num_boxes, D)` (D = 2048).
`import_features` turns them into one split of the precomputed layout that
`load_split` reads, in the order of the split's image ids, in bounded memory.
"""

import contextlib
import os
import re
import sys
import time
import typing
from binascii import Error as Base64Error
from binascii import a2b_base64

import numpy as np

from scan_keras.atomic import TMP_PREFIX, atomic_path
from scan_keras.checks import check_positive_int, is_int
from scan_keras.data.precomp import check_split_name

TSV_COLUMNS = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features")

# The files `import_features` writes, `{split}{suffix}`; an import removes
# the stale temporaries of its split's files.
OUTPUT_SUFFIXES = (
    "_ims.npy", "_boxes.npy", "_image_ids.txt", "_image_sizes.npy", "_num_regions.npy"
)

_INTEGER = re.compile(rb"[0-9]+")
# The extractor wrote NumPy's float32 of an x86 machine: little-endian.
FLOAT32 = np.dtype("<f4")


class TsvRecord(typing.NamedTuple):
    """One image of a TSV file, checked.

    Attributes:
        image_id: the image's id, an int.
        width: the image's width in pixels.
        height: the image's height in pixels.
        boxes: read-only float32 array `(num_boxes, 4)`, (x1, y1, x2, y2).
        features: read-only float32 array `(num_boxes, D)`.
        path: the TSV file.
        line: the line's number in that file (1-based).
    """

    image_id: int
    width: int
    height: int
    boxes: np.ndarray
    features: np.ndarray
    path: str
    line: int


def read_image_ids(path):
    """Reads a split's image ids: one non-negative integer a line.

    Args:
        path: the text file, such as `test_ids.txt`.

    Returns:
        The list of ids (ints), in the file's order.

    Raises:
        ValueError: a line is blank or not an integer, or an id repeats
            (naming the line, or both lines).
    """
    ids, seen = [], {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            text = line.strip()
            if not text:
                raise ValueError(f"{path}: line {number} is blank; expected an image id.")
            if not _INTEGER.fullmatch(text.encode()):
                raise ValueError(
                    f"{path}: line {number}: expected a non-negative integer image "
                    f"id. Received: {text[:40]!r}"
                )
            image_id = int(text)
            if image_id in seen:
                raise ValueError(
                    f"{path}: image id {image_id} is on line {seen[image_id]} and "
                    f"again on line {number}."
                )
            seen[image_id] = number
            ids.append(image_id)
    return ids


def read_tsv_records(paths, only_ids=None):
    """Reads TSV files of region features, one checked image at a time.

    A generator: it holds one line at a time, whatever the files' size.
    Each line must have the 6 columns of `TSV_COLUMNS`; integer id, width,
    height and number of boxes (width, height, boxes >= 1); `boxes` and
    `features` valid base64 of float32 arrays of `num_boxes` rows (of 4
    values, and of D values, D the same on every line); finite values.

    Args:
        paths: a TSV file, or a list of them, read in order.
        only_ids: optional container of image ids. Lines of other images
            are checked only for their columns and id, not decoded, and not
            yielded (reading a whole extraction for one split is then much
            quicker).

    Yields:
        `TsvRecord`s, in the files' order.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: naming the file, the line (1-based) and the problem; a
            last line cut short says that the file looks truncated.
    """
    for record, _ in _scan(_as_paths(paths), only_ids):
        if record is not None:
            yield record


def _scan(paths, only_ids):
    """Yields `(record or None when skipped, bytes of the line)` per line."""
    first = None  # (path, line, D) of the first decoded line
    for path in paths:
        with open(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                record = _parse_line(line, path, number, only_ids)
                if record is not None:
                    dim = record.features.shape[1]
                    if first is None:
                        first = (path, number, dim)
                    elif dim != first[2]:
                        raise ValueError(
                            f"{path}:{number}: image {record.image_id} has "
                            f"{dim} feature values per box, but {first[0]}:"
                            f"{first[1]} has {first[2]}." + _truncation_hint(line)
                        )
                yield record, len(line)


def _as_paths(paths):
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    paths = [os.fsdecode(p) for p in paths]
    if not paths:
        raise ValueError("Expected at least one TSV file. Received: an empty list")
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"TSV file not found: {path}")
    return paths


def _truncation_hint(line):
    # Only a file's last line can lack its end of line: a copy cut short,
    # or an extraction killed while it wrote.
    return "" if line.endswith(b"\n") else " No newline ends the line: the file looks truncated."


def _parse_line(line, path, number, only_ids):
    where = f"{path}:{number}"
    hint = _truncation_hint(line)
    # The reference extractor writes with the csv module: "\r\n" endings.
    fields = line.rstrip(b"\r\n").split(b"\t")
    if len(fields) != len(TSV_COLUMNS):
        found = len(fields) if line.strip() else "an empty line"
        raise ValueError(
            f"{where}: expected {len(TSV_COLUMNS)} tab-separated columns "
            f"({', '.join(TSV_COLUMNS)}), found {found}.{hint}"
        )
    image_id = _integer(fields[0], "image_id", where, minimum=0)
    if only_ids is not None and image_id not in only_ids:
        return None
    width = _integer(fields[1], "image_w", where)
    height = _integer(fields[2], "image_h", where)
    num_boxes = _integer(fields[3], "num_boxes", where)
    boxes = _decode(fields[4], "boxes", where, hint)
    features = _decode(fields[5], "features", where, hint)
    if boxes.size != 4 * num_boxes:
        raise ValueError(
            f"{where}: image {image_id}: num_boxes is {num_boxes}, but `boxes` holds "
            f"{boxes.size} float32 values ({boxes.size / 4:g} boxes of 4).{hint}"
        )
    if features.size == 0 or features.size % num_boxes:
        raise ValueError(
            f"{where}: image {image_id}: `features` holds {features.size} float32 "
            f"values, not num_boxes={num_boxes} rows of equal length.{hint}"
        )
    boxes = boxes.reshape(num_boxes, 4)
    features = features.reshape(num_boxes, -1)
    for name, values in (("boxes", boxes), ("features", features)):
        if not np.isfinite(values).all():
            raise ValueError(f"{where}: image {image_id}: `{name}` holds NaN or infinite values.")
    return TsvRecord(image_id, width, height, boxes, features, path, number)


def _integer(field, name, where, minimum=1):
    field = field.strip()
    if not _INTEGER.fullmatch(field) or int(field) < minimum:
        raise ValueError(
            f"{where}: column `{name}`: expected an integer of at least {minimum}. "
            f"Received: {field[:40].decode('utf-8', 'replace')!r}"
        )
    return int(field)


def _decode(field, name, where, hint):
    # Some Python 3 ports of the extractor wrote str(b64encode(...)): b'...'.
    looks_repr = " (it looks like a Python bytes repr, b'...')" if field[:2] == b"b'" else ""
    try:
        raw = a2b_base64(field, strict_mode=True)
    except Base64Error as err:
        raise ValueError(
            f"{where}: column `{name}` is not valid base64{looks_repr}: {err}.{hint}"
        ) from None
    if len(raw) % 4:
        raise ValueError(
            f"{where}: column `{name}` decodes to {len(raw)} bytes, not whole "
            f"float32 values (4 bytes each).{hint}"
        )
    return np.frombuffer(raw, dtype=FLOAT32)


def import_features(tsv_paths, image_ids, out_dir, split, *, num_boxes=None, progress=True):
    """Writes one split's region features from TSV files, in the precomputed layout.

    Writes into `out_dir`, image `i` being `image_ids[i]`:

    - `{split}_ims.npy`: float32 `(n, R, D)`, the features `load_split` reads;
    - `{split}_boxes.npy`: float32 `(n, R, 4)`, (x1, y1, x2, y2) in pixels;
    - `{split}_image_ids.txt`: the ids, one a line;
    - `{split}_image_sizes.npy`: int32 `(n, 2)`, (width, height);
    - `{split}_num_regions.npy`: int32 `(n,)`, only when `num_boxes` is given.

    `load_split` reads the split once `{split}_caps.txt` (5 captions per
    image, same order) is beside them. Memory stays bounded whatever the
    files' size: one line is held at a time, its rows written straight to
    their place. Lines of images not in `image_ids` are skipped (counted,
    not decoded). Every id of `image_ids` must be found exactly once. An
    existing `{split}_image_ids.txt` (the captions' order) must list them.

    Numbers of boxes: by default every image must have the same number R,
    that of the first image read; the adaptive variant of the extractor
    (10 to 100 boxes per image) is refused, naming the first image whose
    count differs. With `num_boxes=N`, each image's boxes and features are
    padded with zero rows to N (an image with more is refused) and
    `{split}_num_regions.npy` holds each image's count. The training code
    does not read that count: padded regions reach the model as zeros.

    Interruption: the files are written under temporary names (`.tmp-...`,
    see `scan_keras.atomic`) and renamed, `{split}_ims.npy` last, once every
    id was found. A failed or interrupted import writes no final-named file;
    a killed one leaves temporaries, which the next import of the split
    removes. There is no resuming: restart the import. Run one import per
    split and folder at a time. Existing files of the split are replaced.

    Args:
        tsv_paths: a TSV file or a list of them, read in order.
        image_ids: the split's image ids, distinct non-negative ints, in
            the output's order (`read_image_ids` reads a file of them).
        out_dir: the folder to write (created if needed).
        split: one of `SPLITS`.
        num_boxes: None (every image has the same number of boxes), or the
            number of regions to pad every image to.
        progress: show a progress bar when the standard output is a terminal.

    Returns:
        A dict: `"images"` written, `"lines"` read, `"skipped"` (lines of
        images not in `image_ids`), `"bytes"` read, `"seconds"`,
        `"n_regions"` (R) and `"img_dim"` (D).

    Raises:
        FileNotFoundError: a TSV file is missing.
        ValueError: a bad line (naming its file and line), an id missing
            (the first few, and how many) or twice in the files (naming
            both places), a number of boxes refused, ids unlike the
            existing `{split}_image_ids.txt`.

    Example:

    ```python
    from scan_keras.data import import_features, read_image_ids

    ids = read_image_ids("coco_precomp/test_ids.txt")
    tsv = "trainval_36/trainval_resnet101_faster_rcnn_genome_36.tsv"
    summary = import_features([tsv], ids, "coco_precomp", "test")
    summary["images"]  # 5000; summary["skipped"]: the other images' lines
    ```
    """
    start = time.perf_counter()
    check_split_name(split)
    check_positive_int("num_boxes", num_boxes, allow_none=True)
    tsv_paths = _as_paths(tsv_paths)
    position = _positions(image_ids)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    _remove_stale_temporaries(out_dir, split)
    final = {s: os.path.join(out_dir, f"{split}{s}") for s in OUTPUT_SUFFIXES}
    ids_path = final["_image_ids.txt"]
    # The captions importer (data/karpathy.py) writes this file too: its
    # captions follow that order, and features in another would not match.
    if os.path.exists(ids_path) and read_image_ids(ids_path) != list(position):
        raise ValueError(
            f"{ids_path} lists other image ids, or the same in another order, than "
            "`image_ids`: captions written for it would not match these features. "
            f"Pass its ids (`read_image_ids`), or remove it to import another list."
        )

    n = len(position)
    # Only small per-image values stay in memory; features and boxes go to
    # the files. `found`: where each image was read (path, line), or None.
    found = [None] * n
    sizes = np.zeros((n, 2), dtype=np.int32)
    counts = np.zeros(n, dtype=np.int32)
    suffixes = OUTPUT_SUFFIXES if num_boxes else OUTPUT_SUFFIXES[:-1]
    stats = {"lines": 0, "skipped": 0, "bytes": 0}
    bar = _progress_bar(tsv_paths) if progress else None
    layout = None  # (R, D) once the first image is read
    with contextlib.ExitStack() as stack:
        # Entered first, renamed last: `load_split` sees a new `_ims.npy`
        # only once the files beside it are in place.
        tmp = {s: stack.enter_context(atomic_path(final[s])) for s in suffixes}
        for record, size in _scan(tsv_paths, position):
            stats["lines"] += 1
            stats["bytes"] += size
            if bar is not None:
                bar.update(stats["bytes"])
            if record is None:
                stats["skipped"] += 1
                continue
            i = position[record.image_id]
            if found[i] is not None:
                raise ValueError(
                    f"Image {record.image_id} is in the TSV files twice: {found[i][0]}:"
                    f"{found[i][1]} and {record.path}:{record.line}."
                )
            if layout is None:  # the first image sets R (unless given) and D
                layout = (num_boxes or len(record.features), record.features.shape[1])
                first = record._replace(boxes=None, features=None)
                ims = _RowWriter(tmp["_ims.npy"], (n, *layout), stack)
                boxes = _RowWriter(tmp["_boxes.npy"], (n, layout[0], 4), stack)
            _check_count(record, layout[0], num_boxes, first)
            ims.write(i, record.features)
            boxes.write(i, record.boxes)
            found[i] = (record.path, record.line)
            sizes[i] = record.width, record.height
            counts[i] = len(record.features)
        missing = [image_id for image_id, i in position.items() if found[i] is None]
        if missing:
            raise ValueError(
                f"{len(missing)} of the {n} image ids of split {split!r} are not in "
                f"the TSV files (first: {', '.join(map(str, missing[:5]))}); nothing "
                f"was written. Files: {', '.join(tsv_paths)}"
            )
        with open(tmp["_image_ids.txt"], "w", encoding="utf-8", newline="\n") as f:
            f.write("".join(f"{image_id}\n" for image_id in position))
        np.save(tmp["_image_sizes.npy"], sizes)
        if num_boxes:
            np.save(tmp["_num_regions.npy"], counts)
        else:  # an earlier padded import's counts would not describe these
            with contextlib.suppress(FileNotFoundError):
                os.remove(final["_num_regions.npy"])
    if bar is not None:
        bar.update(stats["bytes"], finalize=True)
    seconds = time.perf_counter() - start
    return {"images": n, **stats, "seconds": seconds, "n_regions": layout[0], "img_dim": layout[1]}


def _positions(image_ids):
    """{id: index} of the split's ids, checked."""
    if isinstance(image_ids, (str, bytes, os.PathLike)):
        raise ValueError(f"Expected a list of ints (`read_image_ids`). Received: {image_ids!r}")
    position = {}
    for i, image_id in enumerate(image_ids):
        if not is_int(image_id) or image_id < 0:
            raise ValueError(
                "Expected `image_ids` to hold non-negative integers. "
                f"Received: image_ids[{i}]={image_id!r}"
            )
        image_id = int(image_id)
        if image_id in position:
            raise ValueError(
                f"Image id {image_id} is in `image_ids` twice: at positions "
                f"{position[image_id]} and {i}."
            )
        position[image_id] = i
    if not position:
        raise ValueError("Expected at least one image id. Received: an empty list")
    return position


def _check_count(record, n_regions, num_boxes, first):
    count = len(record.features)
    where = f"{record.path}:{record.line}: image {record.image_id}"
    if num_boxes is None and count != n_regions:
        raise ValueError(
            f"{where} has {count} boxes, but image {first.image_id} "
            f"({first.path}:{first.line}) has {n_regions}. For features with a "
            "varying number of boxes (the adaptive 10-100 boxes), pass "
            "`num_boxes=N` (e.g. 100): images are padded with zero rows to N "
            "boxes and a `_num_regions.npy` file holds their counts."
        )
    if count > n_regions:
        raise ValueError(f"{where} has {count} boxes, more than num_boxes={num_boxes}.")


def _remove_stale_temporaries(folder, split):
    # Only this split's outputs: another split, or another writer's file,
    # may be being written in the same folder.
    ends = tuple(f"-{split}{suffix}" for suffix in OUTPUT_SUFFIXES)
    for name in os.listdir(folder):
        if name.startswith(TMP_PREFIX) and name.endswith(ends):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, name))


class _RowWriter:
    """A `.npy` file `(n, R, C)` of zeros, written one image's rows at a time.

    By file writes, not through a memory map: pages written through a map
    count in the process's resident memory until the kernel reclaims them
    (a 30 GB import would show 30 GB resident).
    """

    def __init__(self, path, shape, stack):  # open_memmap: header and size only
        self._offset = np.lib.format.open_memmap(path, "w+", FLOAT32, shape).offset
        self._row_bytes = shape[1] * shape[2] * FLOAT32.itemsize
        self._file = stack.enter_context(open(path, "r+b"))

    def write(self, index, rows):
        self._file.seek(self._offset + index * self._row_bytes)
        self._file.write(np.ascontiguousarray(rows, dtype=FLOAT32).data)


def _progress_bar(paths):
    """A `keras.utils.Progbar` over the files' bytes, or None off a terminal."""
    if sys.stdout is None or not sys.stdout.isatty():
        return None
    import keras  # only here: reading and writing need no Keras

    total = sum(os.path.getsize(path) for path in paths)
    return keras.utils.Progbar(total, unit_name="byte")
