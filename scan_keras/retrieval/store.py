"""Encoded regions (or words) of a collection on disk, read k items at a time.

The re-rank stage scores a query against the k shortlisted items only,
and needs each item's encoded vectors: the regions v_ir of an image
(R x d) for a caption query, the words e_cw of a caption (W x d, with its
length) for an image query. Encoding them again per query would run the
encoders k times; keeping them in memory would cost n x R x d floats
(100,000 images x 36 x 1,024 float32: 14.7 GB). They are written once,
at index build time, to one `.npy` file, and memory-mapped: a query reads
its k items' rows from the page cache or the disk, and the process's
memory does not grow with the collection.

float16 halves the file and the bytes a query reads; the vectors are unit
vectors (|x| <= 1), where float16's relative error is about 5e-4, and the
scores are computed in float32 from the rounded vectors.
"""

import os

import numpy as np

from scan_keras.atomic import TMP_PREFIX

STORE_DTYPES = ("float32", "float16")


class StoreWriter:
    """Writes `(n, T, d)` encoded vectors to a `.npy` file, block by block.

    The file is created at its full size under a temporary name and
    renamed to `path` by `close`, once every row was written.

    Args:
        path: the `.npy` file.
        shape: `(n, T, d)`.
        dtype: `"float32"` or `"float16"`.
    """

    def __init__(self, path, shape, dtype="float32"):
        if dtype not in STORE_DTYPES:
            raise ValueError(
                f"Unknown store dtype: expected one of {STORE_DTYPES}. "
                f"Received: dtype={dtype!r}"
            )
        self.path = os.fspath(path)
        folder, name = os.path.split(os.path.abspath(self.path))
        self._tmp = os.path.join(folder, f"{TMP_PREFIX}{os.getpid()}-{name}")
        self._array = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=dtype, shape=tuple(shape))
        self._written = 0

    def write(self, block):
        """Appends rows `(b, T, d)` after those already written."""
        block = np.asarray(block)
        stop = self._written + len(block)
        if stop > len(self._array):
            raise ValueError(
                f"{self.path}: {stop} rows written to a store of {len(self._array)}."
            )
        self._array[self._written : stop] = block
        self._written = stop

    def close(self):
        """Flushes the rows to the disk and gives the file its name."""
        if self._written != len(self._array):
            raise ValueError(
                f"{self.path}: {self._written} of {len(self._array)} rows written."
            )
        self._array.flush()
        del self._array
        os.replace(self._tmp, self.path)

    def abort(self):
        """Removes the temporary file of an unfinished store."""
        self.__dict__.pop("_array", None)
        if os.path.exists(self._tmp):
            os.remove(self._tmp)


class EncodedStore:
    """A store written by `StoreWriter`, memory-mapped.

    Args:
        path: the `.npy` file.

    Attributes:
        shape: `(n, T, d)`.
        dtype: as stored.

    Example:

    ```python
    import os, tempfile
    import numpy as np
    from scan_keras.retrieval import EncodedStore, StoreWriter

    path = os.path.join(tempfile.mkdtemp(), "regions.npy")
    writer = StoreWriter(path, (10, 36, 8), dtype="float16")
    writer.write(np.random.rand(10, 36, 8))
    writer.close()
    EncodedStore(path).gather([7, 2]).shape  # (2, 36, 8), float32
    ```
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"No store file: {self.path}")
        try:
            self.array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            raise ValueError(f"{self.path} is not a readable .npy store: {err}") from None
        if self.array.ndim != 3 or str(self.array.dtype) not in STORE_DTYPES:
            raise ValueError(
                f"{self.path}: expected a 3-D float32 or float16 array. "
                f"Received: shape {self.array.shape}, dtype {self.array.dtype}"
            )
        self.shape = self.array.shape
        self.dtype = str(self.array.dtype)

    def __len__(self):
        return self.shape[0]

    def gather(self, indices):
        """The rows `indices` (any order, may repeat) as float32 `(k, T, d)`.

        Rows are read in file order, which keeps the reads sequential
        where the shortlist allows, then put back in the order asked.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise ValueError(
                f"Expected store rows in [0, {len(self)}). Received: values from "
                f"{indices.min()} to {indices.max()}"
            )
        order = np.argsort(indices, kind="stable")
        rows = np.empty((len(indices),) + self.shape[1:], dtype="float32")
        rows[order] = self.array[indices[order]]
        return rows
