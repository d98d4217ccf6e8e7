"""The released precomputed features: reading and writing a split (paper
section 4 "Experiments").

SCAN never sees pixels. The authors released, per dataset, a folder
(`f30k_precomp`, `coco_precomp`) holding for each split:

- `{split}_ims.npy`: float32 `(n_images, n_regions, img_dim)`, the
  bottom-up-attention features of 36 regions x 2048 per image;
- `{split}_caps.txt`: one caption per line, `captions_per_image` (5) per
  image in image order, so caption c belongs to image c // 5.

Features are memory-mapped, never read whole (COCO's train split is
33 GB): `load_split` checks the structure of both files up front, and each
read of features checks those images for NaN and infinity.
"""

import math
import os

import numpy as np

from scan_keras.checks import check_positive_int, is_int
from scan_keras.data.files import read_captions

SPLITS = ("train", "dev", "test", "testall")

# Images checked for NaN/inf per read in `check_finite`: 1000 COCO images
# are 295 MB of float32.
_CHECK_CHUNK = 1000


def check_split_name(split):
    """Raises a ValueError unless `split` is one of `SPLITS`."""
    if split not in SPLITS:
        raise ValueError(
            f"Unknown split: expected one of {SPLITS}. Received: split={split!r}"
        )


def check_split_sizes(name, sizes):
    """Raises a ValueError naming `name` unless `sizes` is a non-empty dict
    {split name: number of images >= 1}; returns a copy."""
    if not isinstance(sizes, dict) or not sizes:
        raise ValueError(
            f"Expected `{name}` to be a non-empty dict {{split: number of "
            f"images}}. Received: {name}={sizes!r}"
        )
    for split, count in sizes.items():
        if split not in SPLITS:
            raise ValueError(
                f"Unknown split in `{name}`: expected keys from {SPLITS}. "
                f"Received: {split!r}"
            )
        if not is_int(count) or count < 1:
            raise ValueError(
                f"Expected positive image counts in `{name}`. "
                f"Received: {name}[{split!r}]={count!r}"
            )
    return dict(sizes)


def _check_captions_per_image(captions_per_image):
    check_positive_int("captions_per_image", captions_per_image)


def split_paths(data_dir, split):
    """The features and captions files of a split: `(ims_path, caps_path)`."""
    data_dir = os.fspath(data_dir)
    return (
        os.path.join(data_dir, f"{split}_ims.npy"),
        os.path.join(data_dir, f"{split}_caps.txt"),
    )


class PrecompSplit:
    """One split of precomputed features and their captions.

    Usually made by `load_split`, which memory-maps the features. It may
    also wrap arrays already in memory. Caption c belongs to image
    `c // captions_per_image`.

    Args:
        images: float array `(n_images, n_regions, img_dim)`, such as a
            `np.memmap`. Kept as given: reads convert to float32.
        captions: list of caption strings, `captions_per_image` per image
            in image order.
        split: the split's name, one of `SPLITS`.
        captions_per_image: captions of each image (5 in the released data).
        path: the features file, named in error messages (None for arrays
            in memory).
        captions_path: the captions file, named in error messages.

    The arguments are kept as attributes of the same names.

    Attributes:
        n_images: number of images.
        n_captions: number of captions, `captions_per_image * n_images`.
        n_regions: regions per image (36 in the released data).
        img_dim: size of a region feature (2048 in the released data).
    """

    def __init__(
        self,
        images,
        captions,
        split,
        captions_per_image=5,
        path=None,
        captions_path=None,
    ):
        check_split_name(split)
        _check_captions_per_image(captions_per_image)
        source = path or "The features"
        if not isinstance(images, np.ndarray):
            raise ValueError(
                "Expected `images` to be a NumPy array (or memmap). "
                f"Received: {type(images).__name__}"
            )
        _check_features_layout(images.dtype, images.shape, source)
        captions = list(captions)
        expected = captions_per_image * images.shape[0]
        if len(captions) != expected:
            raise ValueError(
                f"{captions_path or 'The captions'} has {len(captions)} captions, "
                f"but {source} has {images.shape[0]} images: expected "
                f"{captions_per_image} x {images.shape[0]} = {expected} captions."
            )
        self.images = images
        self.captions = captions
        self.split = split
        self.captions_per_image = int(captions_per_image)
        self.path = path
        self.captions_path = captions_path
        self.n_images, self.n_regions, self.img_dim = (int(d) for d in images.shape)
        self.n_captions = len(captions)
        # Images already checked for NaN/inf: each is checked once, the
        # first time it is read, not once per epoch.
        self._checked = np.zeros(self.n_images, dtype=bool)

    def __repr__(self):
        return (
            f"PrecompSplit(split={self.split!r}, n_images={self.n_images}, "
            f"n_captions={self.n_captions}, n_regions={self.n_regions}, "
            f"img_dim={self.img_dim}, path={self.path!r})"
        )

    # A memmap pickles as its whole content: send the path instead, so a
    # PairBatches reaching worker processes reopens the file there.
    def __getstate__(self):
        state = self.__dict__.copy()
        if isinstance(self.images, np.memmap) and self.path is not None:
            state["images"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.images is None:
            self.images = np.load(self.path, mmap_mode="r")

    def image_of_caption(self, caption_indices):
        """The image each caption belongs to.

        Args:
            caption_indices: integer caption indices, any shape.

        Returns:
            int64 NumPy array of the same shape: `caption_indices //
            captions_per_image`.
        """
        indices = _check_indices(caption_indices, self.n_captions, "caption_indices")
        return indices // self.captions_per_image

    def image_features(self, indices):
        """Reads the features of some images, checked for NaN and infinity.

        Each image is checked the first time it is read.

        Args:
            indices: integer image indices, any shape; may repeat.

        Returns:
            float32 NumPy array `indices.shape + (n_regions, img_dim)`.

        Raises:
            ValueError: an index is out of range, or an image holds NaN or
                infinite values (the error names the file and the image).
        """
        indices = _check_indices(indices, self.n_images, "indices")
        flat = indices.reshape(-1)
        features = np.empty((len(flat), self.n_regions, self.img_dim), np.float32)
        # One C call copies every row straight into place (a training batch
        # is 128 x 36 x 2048 floats) and lets go of the GIL while it copies.
        # A Python loop over rows took the GIL back once per row: reader
        # threads then queued behind the training loop's thread, 128 times
        # a batch (benchmarks/train_speed.py measures this). "clip": the
        # indices are checked above, and "raise" would copy `out` once more.
        if self.images.dtype == np.float32:
            np.take(self.images, flat, axis=0, out=features, mode="clip")
        else:  # `take` casts into `out` only one way: read, then convert
            features[...] = np.take(self.images, flat, axis=0, mode="clip")
        unchecked = ~self._checked[flat]
        if unchecked.any():
            self._check_finite(features[unchecked], flat[unchecked])
            self._checked[flat[unchecked]] = True
        return features.reshape(indices.shape + (self.n_regions, self.img_dim))

    def check_finite(self, batch_size=_CHECK_CHUNK):
        """Scans all the features for NaN and infinity, a chunk at a time.

        Reads of `image_features` check the images they read; this checks
        the whole split up front (it reads every byte of the file), and
        later reads skip the check.

        Args:
            batch_size: images read at a time.

        Raises:
            ValueError: naming the file and the first image with a NaN or
                infinite value.
        """
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(
                "Expected `batch_size` to be a positive integer. "
                f"Received: batch_size={batch_size!r}"
            )
        for start in range(0, self.n_images, batch_size):
            chunk = np.asarray(self.images[start : start + batch_size])
            self._check_finite(chunk, np.arange(start, start + len(chunk)))
            self._checked[start : start + len(chunk)] = True

    def _check_finite(self, features, indices):
        finite = np.isfinite(features).all(axis=(1, 2))
        if not finite.all():
            bad = int(np.min(np.asarray(indices)[~finite]))
            raise ValueError(
                f"{self.path or 'The features'}: non-finite features (NaN or "
                f"inf) in image {bad} of split {self.split!r}."
            )


def _check_indices(indices, n, name):
    indices = np.asarray(indices)
    if indices.size == 0:
        return indices.astype(np.int64)
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(
            f"Expected `{name}` to hold integers. Received: dtype {indices.dtype}"
        )
    low, high = indices.min(), indices.max()
    if low < 0 or high >= n:
        raise ValueError(
            f"Expected `{name}` in [0, {n}). Received: values from {low} to {high}"
        )
    return indices.astype(np.int64)


def _check_features_layout(dtype, shape, source):
    if dtype.hasobject or not np.issubdtype(dtype, np.floating):
        raise ValueError(
            f"{source}: expected float features (float32 in the released "
            f"data). Received: dtype {dtype}"
        )
    if len(shape) != 3:
        raise ValueError(
            f"{source}: expected a 3-D array (n_images, n_regions, img_dim). "
            f"Received: shape {tuple(shape)}"
        )
    if 0 in shape:
        raise ValueError(
            f"{source}: expected at least one image, one region and one "
            f"feature. Received: shape {tuple(shape)}"
        )


def _open_features(path):
    """Memory-maps a `.npy` file after checking its header against its size."""
    truncated = f"{path} is truncated or not a .npy file"
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            # Version 3.0 only differs for structured dtypes, which are
            # rejected below anyway; read its header as 2.0.
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran_order, dtype = read_header(f)
            offset = f.tell()
    except (ValueError, EOFError, SyntaxError, TypeError) as err:
        raise ValueError(f"{truncated}: {err}") from None
    _check_features_layout(dtype, shape, path)
    expected = offset + math.prod(shape) * dtype.itemsize
    size = os.path.getsize(path)
    if size < expected:
        raise ValueError(
            f"{truncated}: its header declares shape {tuple(shape)} of {dtype}, "
            f"{expected} bytes with the header, but the file has {size} bytes."
        )
    try:
        images = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"{truncated}: {err}") from None
    return images


def load_split(data_dir, split, captions_per_image=5):
    """Opens one split of a precomputed-features folder.

    The features are memory-mapped; the structure of both files is checked
    now, the values as they are read (`PrecompSplit.image_features`) or
    all at once with `PrecompSplit.check_finite`.

    Args:
        data_dir: the folder, e.g. `data/f30k_precomp`.
        split: one of `SPLITS`: `"train"`, `"dev"`, `"test"`, `"testall"`.
        captions_per_image: captions of each image (5 in the released data).

    Returns:
        A `PrecompSplit`.

    Raises:
        FileNotFoundError: the folder or one of the two files is missing.
        ValueError: unknown split; features truncated, not a `.npy` file,
            not float, not 3-D or empty; captions not UTF-8, with an empty
            line, or not `captions_per_image` per image.

    Example:

    ```python
    import tempfile
    import numpy as np
    from scan_keras.data import load_split, write_split

    data_dir = tempfile.mkdtemp()
    features = np.random.rand(2, 36, 2048).astype("float32")
    captions = [f"caption {c} of image {c // 5}" for c in range(10)]
    write_split(data_dir, "test", features, captions)

    split = load_split(data_dir, "test")
    split.n_images, split.n_regions, split.img_dim  # (2, 36, 2048)
    split.image_of_caption([0, 7])  # array([0, 1])
    split.image_features([1]).shape  # (1, 36, 2048)
    ```
    """
    check_split_name(split)
    _check_captions_per_image(captions_per_image)
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"Data directory not found: {data_dir}")
    ims_path, caps_path = split_paths(data_dir, split)
    for path in (ims_path, caps_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Split {split!r} is missing its file {path} (a precomputed "
                f"split has {split}_ims.npy and {split}_caps.txt)."
            )
    images = _open_features(ims_path)
    captions = read_captions(caps_path)
    return PrecompSplit(
        images,
        captions,
        split,
        captions_per_image=captions_per_image,
        path=ims_path,
        captions_path=caps_path,
    )


def write_split(data_dir, split, features, captions, captions_per_image=5):
    """Writes one split in the released layout (creating the folder).

    Args:
        data_dir: the folder.
        split: one of `SPLITS`.
        features: float array `(n_images, n_regions, img_dim)`, saved as
            float32. Not checked for NaN: the reader does that.
        captions: `captions_per_image x n_images` non-empty captions without
            newlines, in image order.
        captions_per_image: captions of each image.

    Returns:
        The paths written, `(ims_path, caps_path)`.
    """
    check_split_name(split)
    _check_captions_per_image(captions_per_image)
    features = np.asarray(features)
    _check_features_layout(features.dtype, features.shape, "`features`")
    if isinstance(captions, str):
        raise ValueError(
            "Expected `captions` to be a list of captions, not a single string."
        )
    captions = list(captions)
    expected = captions_per_image * features.shape[0]
    if len(captions) != expected:
        raise ValueError(
            f"Expected {captions_per_image} x {features.shape[0]} = {expected} "
            f"captions for {features.shape[0]} images. Received: "
            f"{len(captions)} captions"
        )
    for i, caption in enumerate(captions):
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(
                "Expected every caption to be a non-empty string. "
                f"Received: captions[{i}]={caption!r}"
            )
        if "\n" in caption or "\r" in caption:
            raise ValueError(
                "A caption must fit on one line. "
                f"Received: captions[{i}]={caption!r}"
            )
    os.makedirs(os.fspath(data_dir), exist_ok=True)
    ims_path, caps_path = split_paths(data_dir, split)
    np.save(ims_path, features.astype(np.float32, copy=False))
    with open(caps_path, "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(caption + "\n" for caption in captions))
    return ims_path, caps_path
