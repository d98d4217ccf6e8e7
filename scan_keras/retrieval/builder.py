"""Building an index folder: the shortlist's vectors and the re-rank's store.

    INDEX/
      index.json       what it was built from (metadata.py)
      images.faiss     the images' dual-encoder vectors (vector_index.py)
      regions.npy      the images' encoded regions (n_images, R, d) (store.py)
      captions.faiss   the captions' vectors, for image queries
      words.npy        the captions' encoded words (n_captions, W, d)
      lengths.npy      each caption's token count (n_captions,)
      captions.txt     the captions, to print results without the data
      image_ids.txt    the images' ids, where the data folder has them

`IndexWriter` writes the folder from blocks of vectors, whatever made
them; `build_index` feeds it from a model and a split, a block of images
at a time, so memory holds one block whatever the collection's size.
Everything is written into a hidden folder beside `INDEX` and renamed to
it at the end: an interrupted build leaves no folder that looks complete.
"""

import os
import shutil
import sys
import time

import keras
import numpy as np
from keras import ops

from scan_keras.atomic import TMP_PREFIX
from scan_keras.checks import check_positive_int
from scan_keras.data.precomp import load_split
from scan_keras.retrieval import metadata as meta
from scan_keras.retrieval import vector_index
from scan_keras.retrieval.dual import DualEncoder, in_blocks, pool_regions, pool_words
from scan_keras.retrieval.rerank import caption_width, encoded_captions, encoded_images
from scan_keras.retrieval.store import StoreWriter

IMAGE_INDEX, CAPTION_INDEX = "images.faiss", "captions.faiss"
REGIONS, WORDS, LENGTHS = "regions.npy", "words.npy", "lengths.npy"
CAPTIONS, IMAGE_IDS = "captions.txt", "image_ids.txt"


class IndexWriter:
    """Writes an index folder from blocks of vectors.

    Args:
        out: the index folder. An existing index there is replaced; any
            other non-empty folder is refused.
        dual_dim: size of the dual-encoder vectors.
        regions_shape: `(n_images, R, d)` of the encoded regions.
        words_shape: `(n_captions, W, d)` of the encoded words, or None
            for an index of images only (text queries only).
        kind: `"flat"`, `"hnsw"` or `"ivf"` (see `vector_index`).
        params: the index's parameters (`vector_index.index_params`).
        store_dtype: `"float32"` or `"float16"`.

    Use it as a context manager; call `train` first for `"ivf"`, then
    `add_images` (and `add_captions`) block by block, then `finish`.
    """

    def __init__(self, out, dual_dim, regions_shape, words_shape=None, kind="flat",
                 params=None, store_dtype="float32"):
        self.out = os.path.abspath(os.fspath(out))
        if os.path.isdir(self.out) and os.listdir(self.out) and not os.path.isfile(
            os.path.join(self.out, meta.METADATA)
        ):
            raise ValueError(
                f"{self.out} exists and is not an index folder: choose another "
                "--out, or empty it."
            )
        self.kind = kind
        self.regions_shape = tuple(regions_shape)
        self.words_shape = None if words_shape is None else tuple(words_shape)
        self.params = vector_index.index_params(kind, params, n_total=regions_shape[0])
        self.store_dtype = store_dtype
        parent, name = os.path.split(self.out)
        os.makedirs(parent, exist_ok=True)
        self.tmp = os.path.join(parent, f"{TMP_PREFIX}{os.getpid()}-{name}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        os.makedirs(self.tmp)
        self.images = vector_index.new_index(kind, dual_dim, self.params)
        self.regions = StoreWriter(os.path.join(self.tmp, REGIONS), regions_shape, store_dtype)
        self.captions = self.words = None
        self.lengths = None
        if words_shape is not None:
            self.captions = vector_index.new_index(kind, dual_dim, self.params)
            self.words = StoreWriter(os.path.join(self.tmp, WORDS), words_shape, store_dtype)
            self.lengths = np.zeros(words_shape[0], np.int32)
            self._n_lengths = 0

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is not None:
            self.abort()

    def train(self, image_sample, caption_sample=None):
        """Trains the indexes that need it (IVF) on samples of vectors."""
        vector_index.train(self.images, image_sample)
        if self.captions is not None:
            vector_index.train(self.captions, caption_sample)

    def add_images(self, regions, vectors):
        """Appends a block of images: encoded regions `(b, R, d)` and dual
        vectors `(b, dual_dim)`."""
        self.regions.write(regions)
        vector_index.add(self.images, vectors)

    def add_captions(self, words, lengths, vectors):
        """Appends a block of captions: encoded words `(b, W, d)`, token
        counts `(b,)` and dual vectors `(b, dual_dim)`."""
        self.words.write(words)
        self.lengths[self._n_lengths : self._n_lengths + len(lengths)] = lengths
        self._n_lengths += len(lengths)
        vector_index.add(self.captions, vectors)

    def finish(self, metadata, captions=None, image_ids=None):
        """Writes the indexes and metadata, and moves the folder into place.

        Args:
            metadata: the entries of `index.json` (`model`, `dual`, `data`);
                the index's and the store's are added here.
            captions: the captions' text, one per caption, if any.
            image_ids: the images' ids, if any.
        """
        self.regions.close()
        vector_index.write_index(self.images, os.path.join(self.tmp, IMAGE_INDEX))
        store = {"dtype": self.store_dtype, "regions": list(self.regions_shape)}
        if self.captions is not None:
            self.words.close()
            np.save(os.path.join(self.tmp, LENGTHS), self.lengths)
            vector_index.write_index(self.captions, os.path.join(self.tmp, CAPTION_INDEX))
            store["words"] = list(self.words_shape)
        for name, lines in ((CAPTIONS, captions), (IMAGE_IDS, image_ids)):
            if lines is not None:
                with open(os.path.join(self.tmp, name), "w", encoding="utf-8", newline="\n") as f:
                    f.write("".join(f"{line}\n" for line in lines))
        meta.write_metadata(self.tmp, dict(
            metadata, index={"kind": self.kind, "params": self.params}, store=store,
        ))
        if os.path.isdir(self.out):
            shutil.rmtree(self.out)  # an index (checked in __init__)
        os.replace(self.tmp, self.out)
        return self.out

    def abort(self):
        """Removes everything written so far."""
        for writer in (self.regions, self.words):
            if writer is not None:
                writer.abort()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _progress(total, verbose):
    if verbose == "auto":
        verbose = sys.stdout.isatty()
    return keras.utils.Progbar(total, unit_name="block") if verbose else None


def _sample(n, kind, params, seed=0):
    """Rows that train an IVF index: a seeded sample, in order."""
    if kind != "ivf":
        return None
    size = min(n, vector_index.TRAIN_PER_CELL * params["nlist"])
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def build_index(model, data_dir, out, split="test", dual="mean", dual_model=None,
                kind="flat", params=None, store_dtype="float32", captions=True,
                batch_size=128, model_path=None, dual_model_path=None, verbose="auto"):
    """Builds the index folder of a split for the two-stage search.

    The arguments are those of `TwoStageSearch.build`, which calls this.

    Returns:
        The index folder's absolute path.
    """
    check_positive_int("batch_size", batch_size)
    for name, m in (("model", model), ("dual_model", dual_model)):
        if m is not None and getattr(m, "vocabulary", None) is None:
            raise ValueError(f"The {name} {m.name!r} has no vocabulary to read captions with.")
    if dual == "global" and dual_model is None:
        raise ValueError("dual='global' needs `dual_model`: a trained GlobalEmbedding.")
    if dual != "global" and dual_model is not None:
        raise ValueError(f"`dual_model` is for dual='global' only. Received: dual={dual!r}")
    data = load_split(data_dir, split)
    encoder = DualEncoder(dual_model if dual == "global" else model, dual)
    d = meta.embed_size(model)
    token_ids = model.vocabulary.encode_batch(data.captions) if captions else None
    dual_ids = token_ids
    if captions and dual == "global":
        dual_ids = dual_model.vocabulary.encode_batch(data.captions)
    width = caption_width(token_ids) if captions else None
    words_shape = (data.n_captions, width, d) if captions else None
    started = time.perf_counter()
    with IndexWriter(out, encoder.dim, (data.n_images, data.n_regions, d), words_shape,
                     kind, params, store_dtype) as writer:
        sample = _sample(data.n_images, kind, writer.params)
        if sample is not None:
            image_sample = in_blocks(
                encoder.embed_images, data.image_features(sample), batch_size)
            caption_sample = None
            if captions:
                rows = _sample(data.n_captions, kind, writer.params, seed=1)
                caption_sample = in_blocks(encoder.embed_captions, dual_ids[rows], batch_size)
            writer.train(image_sample, caption_sample)
        caption_batch = batch_size * data.captions_per_image
        n_blocks = -(-data.n_images // batch_size) + (
            -(-data.n_captions // caption_batch) if captions else 0)
        progress = _progress(n_blocks, verbose)
        done = 0
        for start, regions in encoded_images(model, data, batch_size):
            if dual == "mean":  # SCAN's own regions, pooled: no second encoding
                vectors = ops.convert_to_numpy(pool_regions(regions))
            else:
                features = data.image_features(np.arange(start, start + len(regions)))
                vectors = in_blocks(encoder.embed_images, features, batch_size)
            writer.add_images(regions, vectors)
            done += 1
            if progress is not None:
                progress.update(done)
        if captions:
            blocks = encoded_captions(model, token_ids, width, caption_batch)
            for start, words, lengths in blocks:
                if dual == "mean":
                    mask = np.arange(width)[None, :] < lengths[:, None]
                    vectors = ops.convert_to_numpy(pool_words(words, mask))
                else:
                    ids = dual_ids[start : start + len(words)]
                    vectors = in_blocks(encoder.embed_captions, ids, caption_batch)
                writer.add_captions(words, lengths, vectors)
                done += 1
                if progress is not None:
                    progress.update(done)
        records = {
            "model": meta.model_record(model, model_path, dim=d),
            "dual": {"kind": dual, **meta.model_record(
                encoder.model, dual_model_path if dual == "global" else model_path,
                dim=encoder.dim)},
            "data": meta.data_record(data, data_dir),
            "build_seconds": round(time.perf_counter() - started, 3),
        }
        image_ids = _read_image_ids(data_dir, data)
        return writer.finish(records, data.captions if captions else None, image_ids)


def _read_image_ids(data_dir, data):
    path = os.path.join(os.fspath(data_dir), f"{data.split}_image_ids.txt")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        ids = [line.strip() for line in f]
    return ids if len(ids) == data.n_images else None
