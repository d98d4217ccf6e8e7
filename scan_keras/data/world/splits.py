"""Drawing the world's splits: scenes with their regions and captions, then features.

Splits come from independent seeded streams, one per split, and no scene
occurs twice across splits.
"""

import hashlib

import numpy as np

from scan_keras.checks import check_int
from scan_keras.data import extractor as extractor_lib
from scan_keras.data.precomp import SPLITS, check_split_sizes
from scan_keras.data.world.drawing import IMAGE_SIZE, render_scene
from scan_keras.data.world.grammar import describe, make_caption
from scan_keras.data.world.regions import propose_regions

WORLD_SPLIT_SIZES = {"train": 2500, "dev": 200, "test": 200}
CAPTIONS_PER_IMAGE = 5


def scene_hash(objects):
    """A canonical hash of a scene: its objects' attributes and boxes.

    The same objects at the same places give the same hash, whatever their
    order.

    Args:
        objects: list of dicts with keys "shape", "colour", "size", "box".

    Returns:
        A hex string (SHA-256).
    """
    canonical = sorted(
        (o["shape"], o["colour"], o["size"], tuple(int(v) for v in o["box"]))
        for o in objects
    )
    return hashlib.sha256(repr(canonical).encode("utf-8")).hexdigest()


class WorldSplit:
    """One split of the built-in world: images, regions, captions, ground truth.

    N is the number of images, R the regions per image, D the feature size;
    caption c belongs to image `c // 5`.

    Args:
        images: uint8 `(N, 64, 64, 3)`, the rendered scenes.
        boxes: int32 `(N, R, 4)`: each region's x0, y0, x1, y1 in pixels,
            x1 and y1 exclusive.
        region_objects: int32 `(N, R)`: the object (index into the image's
            `objects`) whose box the region is, -1 for distractors.
        region_kinds: int8 `(N, R)`: `REGION_OBJECT` (0), `REGION_PARTIAL`
            (1, a crop holding 15% to 35% of an object) or
            `REGION_BACKGROUND` (2, no object pixel).
        objects: list (N) of lists of dicts `{"shape", "colour", "size",
            "box"}`, `box` the tight box (x0, y0, x1, y1) of the drawn pixels.
        captions: list of 5 N captions.
        groundings: list of 5 N lists of `(word_index, regions)`:
            `word_index` indexes `tokenize(caption)` (the word's token id
            sits at `word_index + 1`, after `<start>`); `regions` is a
            tuple of region indices in `[0, R)` of the caption's image.
        features: float32 `(N, R, D)` region features, or None before
            extraction.

    The arguments are kept as attributes of the same names.

    Attributes:
        n_images: N.
        n_regions: R.
        feature_dim: D, or None without features.
    """

    def __init__(
        self,
        images,
        boxes,
        region_objects,
        region_kinds,
        objects,
        captions,
        groundings,
        features=None,
    ):
        self.images = images
        self.boxes = boxes
        self.region_objects = region_objects
        self.region_kinds = region_kinds
        self.objects = objects
        self.captions = captions
        self.groundings = groundings
        self.features = features
        self.n_images, self.n_regions = (int(d) for d in boxes.shape[:2])
        self.feature_dim = None if features is None else int(features.shape[-1])

    def __repr__(self):
        return (
            f"WorldSplit(n_images={self.n_images}, n_regions={self.n_regions}, "
            f"n_captions={len(self.captions)}, feature_dim={self.feature_dim})"
        )




def _check_sizes(sizes):
    if sizes is None:
        return dict(WORLD_SPLIT_SIZES)
    return check_split_sizes("sizes", sizes)


def render_split(
    n_images, rng, n_regions=10, min_objects=2, max_objects=4, seen=None
):
    """Draws scenes, their regions and captions, without features.

    Image i depends only on what the stream `rng` drew before it: the first
    k images of a split are the same whatever its size.

    Args:
        n_images: number of images.
        rng: a `np.random.Generator`, advanced by the call.
        n_regions: regions per image, at least `max_objects + 1`.
        min_objects: fewest objects per image, at least 1.
        max_objects: most objects per image, at most 4. The number is
            drawn uniformly between the two, both included.
        seen: a set of `scene_hash` values to avoid, updated in place: a
            scene already seen is drawn again.

    Returns:
        A `WorldSplit` with `features=None`.
    """
    check_int("n_images", n_images, minimum=1)
    check_int("min_objects", min_objects, minimum=1)
    check_int("max_objects", max_objects, minimum=min_objects)
    if max_objects > 4:
        raise ValueError(
            f"Expected `max_objects` of at most 4: more do not fit a {IMAGE_SIZE} "
            f"x {IMAGE_SIZE} image. Received: max_objects={max_objects}"
        )
    check_int("n_regions", n_regions, minimum=max_objects + 1)
    seen = set() if seen is None else seen
    images = np.empty((n_images, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    boxes = np.empty((n_images, n_regions, 4), np.int32)
    region_objects = np.empty((n_images, n_regions), np.int32)
    region_kinds = np.empty((n_images, n_regions), np.int8)
    all_objects, captions, groundings = [], [], []
    for i in range(n_images):
        while True:
            n_objects = int(rng.integers(min_objects, max_objects + 1))
            image, objects, cover, owner = render_scene(rng, n_objects, IMAGE_SIZE)
            key = scene_hash(objects)
            if key not in seen:
                seen.add(key)
                break
        region_boxes, owners, kinds = propose_regions(
            rng, objects, cover, owner, n_regions, IMAGE_SIZE
        )
        images[i], boxes[i] = image, region_boxes
        region_objects[i], region_kinds[i] = owners, kinds
        region_of = {k: owners.index(k) for k in range(len(objects))}
        description = describe(objects)
        texts = []
        for _ in range(CAPTIONS_PER_IMAGE):
            # Five different captions where the image allows it.
            for _ in range(10):
                text, grounding = make_caption(rng, objects, description, region_of)
                if text not in texts:
                    break
            texts.append(text)
            captions.append(text)
            groundings.append(grounding)
        all_objects.append(objects)
    return WorldSplit(
        images, boxes, region_objects, region_kinds, all_objects, captions, groundings
    )


def make_world(
    sizes=None, seed=0, n_regions=10, min_objects=2, max_objects=4, extractor=None
):
    """Draws the built-in world: scenes, regions, features, captions, ground truth.

    Each split has its own stream, `np.random.default_rng([seed, s])` with
    s the split's place in `SPLITS`, so a split's content does not depend
    on which other splits are drawn or on their sizes, and its first k
    images are the same whatever its size. Splits are drawn in `SPLITS`
    order, and a scene already drawn (the same objects at the same places,
    see `scene_hash`) is drawn again, so that no scene is in two splits;
    only such a collision, too rare to meet in practice, would make a
    split depend on another.

    Args:
        sizes: images per split, a dict with keys from `SPLITS`; default
            `WORLD_SPLIT_SIZES` (`{"train": 2500, "dev": 200, "test": 200}`).
        seed: integer seed.
        n_regions: regions per image: each object's box and distractors.
            At least `max_objects + 1`.
        min_objects: fewest objects per image (at least 1).
        max_objects: most objects per image (at most 4).
        extractor: a `RegionFeatureExtractor`; the shipped one if None.

    Returns:
        A dict {split: `WorldSplit`}, in `SPLITS` order.

    Example:

    ```python
    from scan_keras.data import make_world, tokenize

    world = make_world({"train": 20, "test": 10}, seed=0)
    test = world["test"]
    test.features.shape  # (10, 10, 128)
    caption, grounding = test.captions[0], test.groundings[0]
    word_index, regions = grounding[0]
    tokenize(caption)[word_index]  # a colour, size or shape word
    test.region_objects[0, regions[0]]  # the object it names (not -1)
    ```
    """
    sizes = _check_sizes(sizes)
    check_int("seed", seed, minimum=0)
    if extractor is None:
        extractor = extractor_lib.default_extractor()
    seen = set()
    world = {}
    for index, split in enumerate(SPLITS):
        if split not in sizes:
            continue
        rng = np.random.default_rng([seed, index])
        part = render_split(
            sizes[split], rng, n_regions, min_objects, max_objects, seen=seen
        )
        part.features = extractor(part.images, part.boxes)
        part.feature_dim = extractor.feature_dim
        world[split] = part
    return world

