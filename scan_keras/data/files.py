"""Reading and writing the data package's files: captions files and `.npz` archives."""

import io
import warnings
import zipfile

import numpy as np


def write_npz(path, arrays):
    """`np.savez` with fixed zip timestamps: same arrays, same file bytes.

    Args:
        path: the `.npz` file to write.
        arrays: dict {name: array}; each is stored as `{name}.npy`.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(info, buffer.getvalue())


def read_captions(path):
    """Reads a captions file: one caption a line, UTF-8.

    A leading byte-order mark is dropped with a warning.

    Args:
        path: the file, e.g. `{split}_caps.txt`.

    Returns:
        The list of captions, stripped.

    Raises:
        ValueError: the file is not UTF-8, or a line is empty.
    """
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not valid UTF-8 text: {err}") from None
    if text.startswith("\ufeff"):
        # Some editors write a byte-order mark; kept, it would become a
        # token of caption 0. stacklevel=3 names the caller of the reader
        # (load_split, load_grounding) that called this.
        warnings.warn(f"{path} starts with a UTF-8 byte-order mark: ignored.", stacklevel=3)
        text = text[1:]
    # Split on "\n" only: str.splitlines would also split on characters a
    # caption may contain (\x0c, \u2028, ...) and shift captions to the
    # wrong images.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last caption
    captions = [line.strip() for line in lines]
    for number, caption in enumerate(captions, start=1):
        if not caption:
            raise ValueError(f"{path}: line {number} is an empty caption.")
    return captions
