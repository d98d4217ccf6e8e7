"""Querying a trained model: rank a split's images for a free-text caption,
or its captions for an image, and look at the attention behind a match.

`rank_images` and `rank_captions` score with `scoring.similarity_matrix`,
the function evaluation uses, so a query's scores are the recall tables'
scores. `explain` draws each word's attention over the regions of one image
(`plots.plot_word_attention`), on the photo when there is one and on an
outline of the boxes otherwise.

```python
from scan_keras.search import Collection

collection = Collection(model, "data/f30k_precomp", "test")
for hit in collection.rank_images("a dog catches a frisbee", k=5):
    print(hit.rank, hit.index, hit.image_id, f"{hit.score:.3f}")
collection.explain(hit.index, "a dog catches a frisbee", path="why.png")
```
"""

import dataclasses
import os

import numpy as np

from scan_keras.checks import check_positive_int
from scan_keras.data.precomp import load_split
from scan_keras.evaluation import word_region_attention
from scan_keras.plots import plot_word_attention
from scan_keras.scoring import similarity_matrix

# Image files looked for under `images_dir` for an image id, in this order
# (`{split}_filenames.txt`, written by the caption importer, comes first).
_IMAGE_PATTERNS = ("{id}.jpg", "{id}.png", "COCO_val2014_{id:012d}.jpg")


@dataclasses.dataclass(frozen=True)
class Hit:
    """One result: its `rank` (1 = best), the item's `index` in the split,
    the image's id where the split has ids, the `score`, and the caption
    for caption results."""

    rank: int
    index: int
    score: float
    image_id: int | None = None
    caption: str | None = None


def _read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


class Collection:
    """A split of a precomputed folder, searchable with a trained model.

    Args:
        model: a trained model with a vocabulary (`SCAN`, the global
            baseline), e.g. from `keras.saving.load_model`.
        data_dir: the folder in the precomputed layout.
        split: the split searched.
        batch_size: images encoded at a time.

    Optional files beside the features are used when present:
    `{split}_image_ids.txt` (image ids, printed with results),
    `{split}_boxes.npy` (region boxes, for `explain`) and
    `{split}_filenames.txt` (image files, for `explain` on photos).
    """

    def __init__(self, model, data_dir, split="test", batch_size=128):
        if getattr(model, "vocabulary", None) is None:
            raise ValueError(
                f"Model {model.name!r} has no vocabulary to read a query "
                "with: load a model saved with its vocabulary."
            )
        self.model = model
        self.data_dir = os.fspath(data_dir)
        self.split = load_split(self.data_dir, split)
        self.batch_size = batch_size
        self.image_ids = self._optional_lines("image_ids", int)
        self.filenames = self._optional_lines("filenames", str)

    def _optional_lines(self, kind, convert):
        path = os.path.join(self.data_dir, f"{self.split.split}_{kind}.txt")
        if not os.path.exists(path):
            return None
        lines = _read_lines(path)
        if len(lines) != self.split.n_images:
            raise ValueError(
                f"{path} has {len(lines)} lines for {self.split.n_images} "
                "images: one line per image, in the features' order."
            )
        try:
            return [convert(line) for line in lines]
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def _encode(self, caption):
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(
                f"Expected a non-empty caption to search with. Received: {caption!r}"
            )
        return np.asarray([self.model.vocabulary.encode(caption)])

    def _check_image(self, index):
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not (
            0 <= index < self.split.n_images
        ):
            raise ValueError(
                f"Expected an image index in [0, {self.split.n_images}) of the "
                f"{self.split.split} split. Received: {index!r}"
            )
        return int(index)

    def _image_id(self, index):
        return None if self.image_ids is None else self.image_ids[index]

    def rank_images(self, caption, k=10):
        """The `k` images that match `caption` best, best first.

        Returns:
            A list of `Hit`s.
        """
        check_positive_int("k", k)
        scores = similarity_matrix(
            self.model, self.split.images, self._encode(caption),
            batch_size=self.batch_size, verbose=0,
        )[:, 0]
        order = np.argsort(-scores, kind="stable")[:k]
        return [
            Hit(rank + 1, int(i), float(scores[i]), self._image_id(int(i)))
            for rank, i in enumerate(order)
        ]

    def rank_captions(self, index, k=10):
        """The `k` captions of the split that match image `index` best.

        Returns:
            A list of `Hit`s: `index` is the caption's index in the split,
            `image_id` the id of the image the caption belongs to (where
            the split has ids), `caption` its text.
        """
        check_positive_int("k", k)
        index = self._check_image(index)
        token_ids = self.model.vocabulary.encode_batch(self.split.captions)
        scores = similarity_matrix(
            self.model, self.split.images[index : index + 1], token_ids,
            batch_size=self.batch_size, verbose=0,
        )[0]
        order = np.argsort(-scores, kind="stable")[:k]
        owners = self.split.image_of_caption(order)
        return [
            Hit(rank + 1, int(c), float(scores[c]), self._image_id(int(owner)),
                self.split.captions[c])
            for rank, (c, owner) in enumerate(zip(order, owners))
        ]

    def _world(self):
        """The built-in world's pixels and boxes, when the folder is one."""
        if not os.path.exists(os.path.join(self.data_dir, f"{self.split.split}_world.npz")):
            return None
        if "_world_arrays" not in self.__dict__:
            from scan_keras.data.world import load_world_images

            self._world_arrays = load_world_images(self.data_dir, self.split.split)
        return self._world_arrays

    def boxes(self, index):
        """The region boxes of image `index`, `(R, 4)`, or None."""
        path = os.path.join(self.data_dir, f"{self.split.split}_boxes.npy")
        if not os.path.exists(path):
            world = self._world()
            if world is None:
                return None
            return np.asarray(world[1][self._check_image(index)], np.float64)
        boxes = np.load(path, mmap_mode="r")
        if boxes.shape[:2] != (self.split.n_images, self.split.n_regions):
            raise ValueError(
                f"{path} has shape {boxes.shape}: expected "
                f"({self.split.n_images}, {self.split.n_regions}, 4)."
            )
        return np.asarray(boxes[self._check_image(index)], dtype=np.float64)

    def image(self, index, images_dir):
        """The photo of image `index` found in `images_dir` (or the built-in
        world's picture of it), or None."""
        index = self._check_image(index)
        if images_dir is None:
            world = self._world()
            return None if world is None else world[0][index]
        candidates = []
        if self.filenames is not None:
            candidates.append(self.filenames[index])
            candidates.append(os.path.basename(self.filenames[index]))
        image_id = self._image_id(index)
        if image_id is not None:
            candidates += [p.format(id=image_id) for p in _IMAGE_PATTERNS]
        for name in candidates:
            path = os.path.join(images_dir, name)
            if os.path.exists(path):
                from matplotlib.image import imread

                return imread(path)
        return None

    def attention(self, index, caption):
        """The words of `caption` and each one's attention over the regions
        of image `index`: `(words, (n_words, R) weights)`."""
        index = self._check_image(index)
        token_ids = self._encode(caption)
        weights = word_region_attention(
            self.model, self.split.images[index : index + 1], token_ids
        )[0]
        vocabulary = self.model.vocabulary
        words, rows = [], []
        # <start> and <end> wrap every caption: they attend too, but name
        # nothing in the image.
        for w, token in enumerate(token_ids[0]):
            word = vocabulary.words[token]
            if word not in ("<start>", "<end>", "<pad>"):
                words.append(word)
                rows.append(weights[w])
        return words, np.asarray(rows)

    def explain(self, index, caption, path=None, images_dir=None, image=None, boxes=None):
        """The figure of each word's attention over image `index`'s regions.

        Args:
            index: the image's index in the split.
            caption: the caption whose words attend.
            path: where to save the figure, if given.
            images_dir: a folder holding the split's photos (found through
                `{split}_filenames.txt` or the image id); the built-in
                world's pictures are found without it.
            image: the image itself (uint8 or float RGB), instead.
            boxes: the region boxes `(R, 4)` in the image's pixels, instead
                of `{split}_boxes.npy`.

        Returns:
            The `matplotlib.figure.Figure`.
        """
        index = self._check_image(index)
        boxes = self.boxes(index) if boxes is None else np.asarray(boxes, np.float64)
        if boxes is None:
            raise ValueError(
                f"No boxes for the {self.split.split} split: "
                f"{self.split.split}_boxes.npy is not in {self.data_dir} "
                "(the feature importer writes it); pass `boxes=`."
            )
        if image is None:
            image = self.image(index, images_dir)
        words, weights = self.attention(index, caption)
        return plot_word_attention(image, boxes, words, weights, path=path, title=caption)
