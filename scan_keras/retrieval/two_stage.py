"""Search in two stages: a dual-encoder shortlist, re-ranked by SCAN.

SCAN scores a caption against an image by letting every word attend over
every region: nothing of that can be computed before the query, so
ranking n images costs n full attentions per query, and a test set's
all-pairs matrix n x 5n. The two-stage search (as in Geigle et al.,
"Retrieve Fast, Rerank Smart", TACL 2022) splits the work:

1. shortlist: a dual encoder embeds the query into one vector, and a
   vector index (`vector_index.py`) returns the `shortlist` items whose
   vectors, embedded once at build time, have the largest inner product
   with it;
2. re-rank: SCAN scores the query against those items only, reading
   their encoded regions (or words) from the memory-mapped store
   (`store.py`), and the best `k` are returned.

Per query this is one caption encoding, one index search and `shortlist`
attentions, whatever n: the cost of SCAN no longer grows with the
collection, only the index's does. What the shortlist misses, SCAN never
sees: `ranking.two_stage_metrics` measures that loss on the paper's
protocols.

```python
from scan_keras.retrieval import TwoStageSearch

search = TwoStageSearch.build(model, "data/f30k_precomp", "index/f30k_test", split="test")
search = TwoStageSearch.load("index/f30k_test", model)
for hit in search.query_text("a dog catches a frisbee", k=5, shortlist=100):
    print(hit.rank, hit.index, f"{hit.score:.3f}")
```
"""

import os

import keras
import numpy as np
from keras import ops

from scan_keras.checks import check_positive_int
from scan_keras.data.precomp import load_split
from scan_keras.data.vocabulary import UNK_ID
from scan_keras.retrieval import builder, rerank, vector_index
from scan_keras.retrieval import metadata as meta
from scan_keras.retrieval.dual import DualEncoder, pool_regions
from scan_keras.retrieval.store import EncodedStore
from scan_keras.search import Hit

# Token ids that are not words: <pad>, <start>, <end>, <unk>.
_NOT_WORDS = (0, 1, 2, UNK_ID)


def _load_model(path, what):
    import scan_keras.models  # noqa: F401  (registers the package's classes)

    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(
            f"The index records no readable file for {what} ({path}): pass it."
        )
    return keras.saving.load_model(path, compile=False)


def _read_lines(path):
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def encode_query(vocabulary, caption):
    """Token ids `(1, W)` of a query caption; refuses a caption none of
    whose words the vocabulary knows (SCAN would score it as `<unk>`s)."""
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"Expected a non-empty caption to search with. Received: {caption!r}")
    ids = vocabulary.encode(caption)
    if all(i in _NOT_WORDS for i in ids):
        raise ValueError(
            f"None of the words of {caption!r} is in the model's vocabulary "
            f"({len(vocabulary)} words): nothing to match."
        )
    return np.asarray([ids])


class TwoStageSearch:
    """An index folder, opened for queries with the model it was built with.

    Made by `TwoStageSearch.build` or `TwoStageSearch.load`; the model (and
    the global dual encoder) are checked against the index's metadata.

    Args:
        folder: the index folder.
        model: the SCAN model (None: the file the index records).
        dual_model: the `GlobalEmbedding` of a `"global"` index (None: the
            file the index records).
        mmap: map the FAISS indexes rather than read them.

    Attributes:
        metadata: the folder's `index.json`.
        n_images, n_captions: the collection's sizes (`n_captions` 0 for
            an index of images only).
    """

    def __init__(self, folder, model=None, dual_model=None, mmap=True):
        self.folder = os.path.abspath(os.fspath(folder))
        self.metadata = meta.read_metadata(self.folder)
        self.kind = self.metadata["index"]["kind"]
        self.params = self.metadata["index"]["params"]
        self.images = vector_index.read_index(os.path.join(self.folder, builder.IMAGE_INDEX), mmap)
        if self.images.ntotal == 0:
            raise ValueError(f"The index {self.folder} is empty: it holds no image.")
        self.regions = EncodedStore(os.path.join(self.folder, builder.REGIONS))
        self.n_images = self.images.ntotal
        if len(self.regions) != self.n_images:
            raise ValueError(
                f"{self.folder}: {self.n_images} image vectors but {len(self.regions)} "
                "stored images. Build the index again."
            )
        self.captions = self.words = self.lengths = None
        self.n_captions = 0
        if os.path.isfile(os.path.join(self.folder, builder.CAPTION_INDEX)):
            self.captions = vector_index.read_index(
                os.path.join(self.folder, builder.CAPTION_INDEX), mmap)
            self.words = EncodedStore(os.path.join(self.folder, builder.WORDS))
            self.lengths = np.load(os.path.join(self.folder, builder.LENGTHS))
            self.n_captions = self.captions.ntotal
        self.texts = _read_lines(os.path.join(self.folder, builder.CAPTIONS))
        ids = _read_lines(os.path.join(self.folder, builder.IMAGE_IDS))
        self.image_ids = None if ids is None else [int(i) if i.isdigit() else i for i in ids]
        if model is None:
            model = _load_model(self.metadata["model"]["path"], "the model")
        meta.check_model(self.metadata, "model", model, meta.embed_size(model), "The model")
        self.model = model
        dual = self.metadata["dual"]["kind"]
        if dual == "global":
            if dual_model is None:
                dual_model = _load_model(self.metadata["dual"]["path"], "the dual model")
            self.dual = DualEncoder(dual_model, dual)
            meta.check_model(self.metadata, "dual", dual_model, self.dual.dim, "The dual model")
        else:
            self.dual = DualEncoder(model, dual)
        self._data = None

    @classmethod
    def build(cls, model, data_dir, out, split="test", dual="mean", dual_model=None,
              approximate=None, params=None, store_dtype="float32", captions=True,
              batch_size=128, model_path=None, dual_model_path=None, verbose="auto"):
        """Builds the index folder of a split and opens it.

        Args:
            model: the trained SCAN model that re-ranks (with its vocabulary).
            data_dir: the folder in the precomputed layout.
            out: the index folder to write (an index there is replaced).
            split: the split indexed.
            dual: the shortlist's dual encoder: `"mean"` (SCAN's encoders,
                mean-pooled) or `"global"` (`dual_model`); see `dual.py`.
            dual_model: the `GlobalEmbedding` model of `dual="global"`.
            approximate: None for exact search (`"flat"`), or `"hnsw"` or
                `"ivf"`.
            params: the approximate index's parameters (`m`,
                `ef_construction`, `ef_search` for HNSW; `nlist`, `nprobe`
                for IVF); see `vector_index.DEFAULT_PARAMS`.
            store_dtype: `"float32"`, or `"float16"` for half the disk.
            captions: also index the captions, for image queries.
            batch_size: images encoded at a time (captions: 5 times as many).
            model_path: the model's file, recorded so that `load` and the
                command line can find it.
            dual_model_path: the same for `dual_model`.
            verbose: a progress bar (`"auto"`: on a terminal).

        Returns:
            A `TwoStageSearch` on the new folder.
        """
        kind = approximate or "flat"
        folder = builder.build_index(
            model, data_dir, out, split=split, dual=dual, dual_model=dual_model,
            kind=kind, params=params, store_dtype=store_dtype, captions=captions,
            batch_size=batch_size, model_path=model_path,
            dual_model_path=dual_model_path, verbose=verbose,
        )
        return cls(folder, model, dual_model)

    @classmethod
    def load(cls, folder, model=None, dual_model=None, mmap=True):
        """Opens an index folder (see the class's arguments)."""
        return cls(folder, model, dual_model, mmap)

    def check_split(self, split):
        """Raises a ValueError unless `split` (a `PrecompSplit`) is the one
        the index was built from."""
        meta.check_data(self.metadata, split)

    def _check_sizes(self, k, shortlist, n, what):
        check_positive_int("k", k)
        check_positive_int("shortlist", shortlist)
        if shortlist > n:
            raise ValueError(
                f"Expected `shortlist` of at most the {n} {what} of the index. "
                f"Received: shortlist={shortlist}"
            )
        if k > shortlist:
            raise ValueError(
                "Expected `k` of at most `shortlist`: results come from the "
                f"shortlist. Received: k={k}, shortlist={shortlist}"
            )

    def shortlist_text(self, token_ids, shortlist, dual_token_ids=None):
        """The shortlisted images of captions by the dual encoder alone.

        Args:
            token_ids: `(q, W)` token ids in the model's vocabulary.
            shortlist: images per caption.
            dual_token_ids: the same captions in the dual model's
                vocabulary (`"global"` indexes; default `token_ids`).

        Returns:
            `(scores, ids)`, each `(q, shortlist)`, best first; -1 where
            an approximate index found fewer.
        """
        ids = token_ids if dual_token_ids is None else dual_token_ids
        vectors = self.dual.embed_captions(ids)
        return vector_index.search(self.images, self.kind, self.params, vectors, shortlist)

    def rank_text(self, caption, k=10, shortlist=100):
        """The two-stage ranking of the images for `caption`, as arrays.

        Returns:
            `(indices, scores, candidates)`: the best `k` images and their
            SCAN scores, best first, and the shortlisted images in the dual
            encoder's order.
        """
        self._check_sizes(k, shortlist, self.n_images, "images")
        token_ids = encode_query(self.model.vocabulary, caption)
        words, mask, pooled = rerank.encode_caption(self.model, token_ids)
        if self.dual.kind == "mean":
            vectors = ops.convert_to_numpy(pooled)
        else:
            vectors = self.dual.embed_captions(
                encode_query(self.dual.model.vocabulary, caption))
        _, ids = vector_index.search(self.images, self.kind, self.params, vectors, shortlist)
        candidates = ids[0][ids[0] >= 0]
        scores = rerank.score_images(
            self.model, self.regions.gather(candidates), words, mask, rows=shortlist)
        order = np.argsort(-scores, kind="stable")[:k]
        return candidates[order], scores[order], candidates

    def query_text(self, caption, k=10, shortlist=100):
        """The `k` images that match `caption` best, of the `shortlist`
        images the dual encoder proposes, ranked by SCAN.

        Args:
            caption: free text; at least one word must be in the vocabulary.
            k: results.
            shortlist: images SCAN scores (at most the collection's size).

        Returns:
            A list of `scan_keras.search.Hit`s, best first: `index` is the
            image's index in the split, `score` SCAN's score.
        """
        indices, scores, _ = self.rank_text(caption, k, shortlist)
        return [
            Hit(rank + 1, int(i), float(s), self._image_id(int(i)))
            for rank, (i, s) in enumerate(zip(indices, scores))
        ]

    def _image_id(self, index):
        return None if self.image_ids is None else self.image_ids[index]

    def _split(self):
        if self._data is None:
            record = self.metadata["data"]
            self._data = load_split(record["data_dir"], record["split"])
            self.check_split(self._data)
        return self._data

    def _image_regions(self, image):
        """Encoded regions `(1, R, d)` and the dual vector of an image
        given by its index in the split or by its features `(R, img_dim)`."""
        if isinstance(image, (int, np.integer)) and not isinstance(image, bool):
            if not 0 <= image < self.n_images:
                raise ValueError(
                    f"Expected an image index in [0, {self.n_images}). Received: {image}"
                )
            regions = self.regions.gather([image])
            features = None
            if self.dual.kind != "mean":
                features = self._split().image_features([int(image)])
        else:
            features = np.asarray(image, "float32")
            if features.ndim != 2 or features.shape[1] != self.model.img_dim:
                raise ValueError(
                    "Expected an image index or its features of shape "
                    f"(n_regions, {self.model.img_dim}). Received: shape {features.shape}"
                )
            features = features[None]
            regions = ops.convert_to_numpy(rerank.encode_image(self.model, features))
        if self.dual.kind == "mean":
            return regions, ops.convert_to_numpy(pool_regions(regions))
        return regions, self.dual.embed_images(features)

    def rank_image(self, image, k=10, shortlist=100):
        """The two-stage ranking of the captions for an image, as arrays
        `(indices, scores, candidates)` (see `rank_text`)."""
        if self.captions is None:
            raise ValueError(
                f"The index {self.folder} holds no captions: build it with "
                "captions to query with images."
            )
        self._check_sizes(k, shortlist, self.n_captions, "captions")
        regions, vector = self._image_regions(image)
        _, ids = vector_index.search(self.captions, self.kind, self.params, vector, shortlist)
        candidates = ids[0][ids[0] >= 0]
        scores = rerank.score_captions(
            self.model, regions, self.words.gather(candidates), self.lengths[candidates],
            rows=shortlist,
        )
        order = np.argsort(-scores, kind="stable")[:k]
        return candidates[order], scores[order], candidates

    def query_image(self, image, k=10, shortlist=100):
        """The `k` captions that match an image best, of the `shortlist`
        captions the dual encoder proposes, ranked by SCAN.

        Args:
            image: the image's index in the indexed split, or its region
                features `(n_regions, img_dim)`.
            k: results.
            shortlist: captions SCAN scores.

        Returns:
            A list of `Hit`s: `index` is the caption's index, `image_id`
            the id of its image where known, `caption` its text.
        """
        indices, scores, _ = self.rank_image(image, k, shortlist)
        per_image = self.metadata["data"]["captions_per_image"]
        return [
            Hit(rank + 1, int(c), float(s), self._image_id(int(c) // per_image),
                None if self.texts is None else self.texts[c])
            for rank, (c, s) in enumerate(zip(indices, scores))
        ]
