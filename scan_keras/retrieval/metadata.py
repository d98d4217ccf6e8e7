"""What an index folder records about how it was built, and the checks
that a query or an evaluation uses it with the same model and data.

An index holds vectors and encoded regions made by one model from one
split. Queried with another model, or evaluated on another split, it
would answer without complaint and wrongly. `index.json` therefore
records:

- `model`, `dual`: each model's fingerprint (a SHA-256 of its config and
  its weights), its name, the file it was read from and its vector size;
- `data`: the data folder, the split, its sizes and a SHA-256 of its
  captions;
- `index`, `store`: the index kind and parameters, the store's dtype and
  shapes.

`check_model` and `check_data` compare a model or a split with the
record, each mismatch a ValueError saying which and how.
"""

import hashlib
import json
import os

import numpy as np
from keras import ops

from scan_keras.atomic import read_json, write_json

FORMAT = "scan-keras-index"
VERSION = 1
METADATA = "index.json"


def model_fingerprint(model):
    """A SHA-256 (hex) of a model's config and weights.

    Two models share it when they compute the same function: the same
    architecture and options and the same weights, whichever backend or
    file they were loaded from.
    """
    digest = hashlib.sha256()
    config = json.dumps(model.get_config(), sort_keys=True, default=repr)
    digest.update(config.encode("utf-8"))
    for weight in model.weights:
        value = np.ascontiguousarray(ops.convert_to_numpy(weight))
        digest.update(f"{weight.path}:{value.dtype}:{value.shape}".encode("utf-8"))
        digest.update(value.tobytes())
    return digest.hexdigest()


def embed_size(model):
    """The size of a model's encoded regions (and words)."""
    probe = np.zeros((1, 1, model.img_dim), "float32")
    return int(ops.shape(model.encode_images(probe))[-1])


def model_record(model, path=None, dim=None):
    """The metadata entry of a model (`dim`: its vector size, if not the
    encoded regions')."""
    return {
        "name": model.name,
        "class": type(model).__name__,
        "path": None if path is None else os.path.abspath(os.fspath(path)),
        "fingerprint": model_fingerprint(model),
        "dim": embed_size(model) if dim is None else int(dim),
    }


def captions_digest(captions):
    """A SHA-256 (hex) of a split's captions, in order."""
    return hashlib.sha256("\n".join(captions).encode("utf-8")).hexdigest()


def data_record(split, data_dir):
    """The metadata entry of the split an index is built from."""
    return {
        "data_dir": os.path.abspath(os.fspath(data_dir)),
        "split": split.split,
        "n_images": split.n_images,
        "n_captions": split.n_captions,
        "captions_per_image": split.captions_per_image,
        "n_regions": split.n_regions,
        "img_dim": split.img_dim,
        "captions_sha256": captions_digest(split.captions),
    }


def write_metadata(folder, metadata):
    """Writes `index.json` into `folder`."""
    write_json(os.path.join(folder, METADATA), dict(metadata, format=FORMAT, version=VERSION), indent=1)


def read_metadata(folder):
    """Reads and checks the `index.json` of an index folder."""
    folder = os.fspath(folder)
    path = os.path.join(folder, METADATA)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"No index folder: {folder}")
    if not os.path.isfile(path):
        raise ValueError(
            f"{folder} is not an index folder: it has no {METADATA} "
            "(`scan-keras index build` writes one)."
        )
    metadata = read_json(path, "the index's metadata")
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not the metadata of a scan-keras index.")
    if metadata.get("version") != VERSION:
        raise ValueError(
            f"{path}: index format version {metadata.get('version')!r}; this "
            f"scan-keras reads version {VERSION}. Build the index again."
        )
    return metadata


def check_model(metadata, key, model, size, what):
    """Raises a ValueError unless `model` is the one the index recorded
    under `key` (`"model"` or `"dual"`): first its vector size, then its
    fingerprint.

    Args:
        metadata: the index's metadata.
        key: `"model"` or `"dual"`.
        model: the model given.
        size: the size of its vectors (encoded regions, or dual vectors).
        what: how to name it in the message (`"The model"`).
    """
    record = metadata[key]
    expected = record["dim"]
    if size != expected:
        raise ValueError(
            f"{what} {model.name!r} encodes into {size} dimensions; the index "
            f"was built with {expected} (model {record['name']!r}). Use the "
            "model the index was built with, or build the index again."
        )
    if model_fingerprint(model) != record["fingerprint"]:
        raise ValueError(
            f"{what} {model.name!r} is not the model the index was built with "
            f"({record['name']!r}, {record['path'] or 'not saved'}): its "
            "config or weights differ. Use that model, or build the index again."
        )


def check_data(metadata, split):
    """Raises a ValueError unless `split` (a `PrecompSplit`) is the split
    the index was built from: the same name, sizes and captions."""
    record = metadata["data"]
    if split.split != record["split"]:
        raise ValueError(
            f"The index was built from split {record['split']!r} of "
            f"{record['data_dir']}, not {split.split!r}. Build an index of "
            f"the {split.split!r} split."
        )
    found = (split.n_images, split.n_captions, captions_digest(split.captions))
    expected = (record["n_images"], record["n_captions"], record["captions_sha256"])
    if found != expected:
        raise ValueError(
            f"The index was built from another {split.split!r} split "
            f"({record['n_images']} images, {record['n_captions']} captions, of "
            f"{record['data_dir']}); this one has {split.n_images} images and "
            f"{split.n_captions} captions{'' if found[:2] != expected[:2] else ', other captions'}."
        )
