"""The built-in world: rendered scenes of shapes, their regions and captions.

SCAN's central claim is that it learns which image region each word refers
to from matching (image, caption) pairs alone. Real datasets cannot show
it, for they hold no word-region ground truth. This world can: in the manner
of ShapeWorld and CLEVR it draws scenes whose full description is known,
and describes them in a small compositional language.

- **Scenes.** A 64 x 64 RGB image drawn with NumPy (anti-aliased) holds 2 to
  4 objects, each a shape (`SHAPES`) in a colour (`COLOURS`) and a size
  (`SIZES`), each at a place of its own, on a background of a muted colour
  gradient with a low-contrast noise texture.
- **Regions**, as a bottom-up detector proposes them: `n_regions` boxes per
  image, each object's box (jittered by a pixel) and distractors (crops of
  pure background, crops holding 15% to 35% of an object's pixels), in
  shuffled order. Each region's feature comes from its pixels, through the
  frozen CNN of `scan_keras.data.extractor`; no label ever enters a feature.
- **Captions**, five per image, each true of its image and naming 1 to 3 of
  its objects, from a grammar with synonyms ("square" / "box"), several
  templates and word orders, counts ("two red squares", said only when
  exactly two objects match) and relations ("left of", "above", ...,
  said only when one box lies wholly on that side of the other). A single
  object is always named by attributes that single it out in its image.
- **Ground truth.** For each colour, size and shape word of a caption, the
  region(s) it refers to: the full box region of its object, or of every
  object of a count phrase.

Splits come from independent seeded streams, one per split, and no scene
occurs twice across splits. Everything is NumPy, never a Keras op: the same
seed gives the same bytes on every run and every Keras backend.
"""

import hashlib
import json
import os
import zipfile

import numpy as np

from scan_keras.data import extractor as extractor_lib
from scan_keras.data.extractor import _write_npz
from scan_keras.data.precomp import (
    SPLITS,
    _read_captions,
    split_paths,
    write_split,
)
from scan_keras.data.vocabulary import Vocabulary, tokenize

IMAGE_SIZE = 64
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star")
# Saturated colours, far from each other and from the muted backgrounds.
COLOURS = {
    "red": (220, 30, 30),
    "orange": (245, 135, 20),
    "yellow": (240, 225, 30),
    "green": (30, 170, 50),
    "cyan": (30, 215, 225),
    "blue": (35, 65, 225),
    "purple": (150, 40, 205),
    "white": (245, 245, 245),
}
SIZES = ("small", "large")
WORLD_SPLIT_SIZES = {"train": 2500, "dev": 200, "test": 200}
# The reference code's threshold: words seen 4 times in train + dev.
WORLD_MIN_COUNT = 4
CAPTIONS_PER_IMAGE = 5
_GROUNDING_FORMAT = "scan-keras world grounding"

# Region kinds, kept in `WorldSplit.region_kinds`.
REGION_OBJECT, REGION_PARTIAL, REGION_BACKGROUND = 0, 1, 2

# The words of the grammar. Each attribute value has synonyms; each shape
# word comes as (singular, plural).
COLOUR_WORDS = {
    "red": ("red",),
    "orange": ("orange",),
    "yellow": ("yellow",),
    "green": ("green",),
    "cyan": ("cyan", "turquoise"),
    "blue": ("blue",),
    "purple": ("purple", "violet"),
    "white": ("white",),
}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
SHAPE_WORDS = {
    "circle": (("circle", "circles"), ("disc", "discs")),
    "square": (("square", "squares"), ("box", "boxes")),
    "triangle": (("triangle", "triangles"),),
    "diamond": (("diamond", "diamonds"), ("rhombus", "rhombuses")),
    "cross": (("cross", "crosses"),),
    "star": (("star", "stars"),),
}
# The words that refer to regions: each one of them in a caption is grounded.
CONTENT_WORDS = frozenset(
    [w for words in COLOUR_WORDS.values() for w in words]
    + [w for words in SIZE_WORDS.values() for w in words]
    + [w for pairs in SHAPE_WORDS.values() for pair in pairs for w in pair]
)
RELATION_WORDS = {
    "left": (("left", "of"), ("to", "the", "left", "of"), ("on", "the", "left", "of")),
    "right": (("right", "of"), ("to", "the", "right", "of")),
    "above": (("above",), ("over",)),
    "below": (("below",), ("under",), ("beneath",)),
}
COUNT_WORDS = {2: "two", 3: "three"}
_INTROS = (
    ("a", "picture", "of"),
    ("an", "image", "of"),
    ("a", "scene", "with"),
    ("an", "image", "with"),
)

# Object radii in pixels (a shape's half-width); the ranges leave a gap,
# so that "small" and "large" are never in doubt.
_RADII = {"small": (5.0, 6.0), "large": (10.0, 12.0)}
_GAP = 3  # pixels at least between the extents of two objects
_SUPERSAMPLE = 4  # sub-pixel samples per axis, for anti-aliasing
_COLOUR_JITTER = 10
_DUPLICATE_RATE = 0.3  # a new object copies an earlier one's shape ...
_DUPLICATE_COLOUR_RATE = 0.6  # ... and then, this often, its colour too
# The share of an object's pixels a partial crop holds: a visible piece,
# clearly less than half.
_PARTIAL_MIN, _PARTIAL_MAX = 0.15, 0.35
_POSTPOSED_COLOUR_RATE = 0.15  # "a box in red"
# How often a single object is named by each attribute set, where that
# set singles it out (the shape word is always there).
_ATTRIBUTE_SETS = (("colour",), ("size", "colour"), (), ("size",))
_ATTRIBUTE_WEIGHTS = (5.0, 3.0, 1.0, 1.0)
# Caption kinds, and their odds where the image allows them.
_FAMILIES = ("single", "pair", "relation", "triple", "count", "count_pair")
_FAMILY_WEIGHTS = (2.0, 2.0, 3.0, 1.0, 1.5, 0.5)


def _star(points=5, inner=0.42):
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], -1)


# Polygons in units of the radius, y pointing down.
_TRIANGLE = np.array([[0.0, -1.0], [1.0, 0.75], [-1.0, 0.75]])
_STAR = _star()


def _inside_polygon(u, v, vertices):
    """Even-odd rule: is each point (u, v) inside the polygon?"""
    u, v = np.broadcast_arrays(u, v)
    inside = np.zeros(u.shape, dtype=bool)
    for (xa, ya), (xb, yb) in zip(vertices, np.roll(vertices, -1, axis=0)):
        crosses = (ya > v) != (yb > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = xa + (xb - xa) * (v - ya) / (yb - ya)
        inside ^= crosses & (u < x_at)
    return inside


def _inside(shape, u, v):
    """Is each point (u, v), in units of the radius from the centre, inside?"""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.82
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.32) & (av <= 1.0)) | ((av <= 0.32) & (au <= 1.0))
    if shape == "triangle":
        return _inside_polygon(u, v, _TRIANGLE)
    return _inside_polygon(u, v, _STAR)


def _coverage(shape, cx, cy, radius, size):
    """The fraction of each pixel the shape covers, on the pixels near it.

    Returns:
        `(x0, y0, alpha)`: alpha `(h, w)` covers pixels `y0:y0 + h`,
        `x0:x0 + w`; pixel (x, y) spans [x, x + 1) x [y, y + 1).
    """
    x0 = max(int(np.floor(cx - radius)), 0)
    y0 = max(int(np.floor(cy - radius)), 0)
    x1 = min(int(np.ceil(cx + radius)), size)
    y1 = min(int(np.ceil(cy + radius)), size)
    sub = (np.arange(_SUPERSAMPLE) + 0.5) / _SUPERSAMPLE
    xs = (np.arange(x0, x1)[:, None] + sub).reshape(-1)
    ys = (np.arange(y0, y1)[:, None] + sub).reshape(-1)
    u, v = (xs[None, :] - cx) / radius, (ys[:, None] - cy) / radius
    inside = _inside(shape, u, v)
    # Average the sub-pixel samples of each pixel: (y, sy, x, sx) -> (y, x).
    alpha = inside.reshape(y1 - y0, _SUPERSAMPLE, x1 - x0, _SUPERSAMPLE)
    return x0, y0, alpha.mean(axis=(1, 3))


def _interpolation_matrix(n_out, n_in):
    """Linear interpolation from `n_in` evenly spaced knots to `n_out` points."""
    positions = np.linspace(0, n_in - 1, n_out)
    knots = np.arange(n_in)
    return np.stack([np.interp(positions, knots, row) for row in np.eye(n_in)], 1)


_SMOOTH = _interpolation_matrix(IMAGE_SIZE, 5)


def _background(rng, size):
    """A muted two-colour gradient with smooth and fine low-contrast noise."""
    grey = rng.uniform(70, 150)
    start = grey + rng.uniform(-15, 15, 3)
    end = start + rng.uniform(-35, 35) + rng.uniform(-10, 10, 3)
    angle = rng.uniform(0, 2 * np.pi)
    centred = np.arange(size) + 0.5 - size / 2
    along = centred[None, :] * np.cos(angle) + centred[:, None] * np.sin(angle)
    image = start + (along / size + 0.5)[..., None] * (end - start)
    smooth = _SMOOTH @ rng.normal(0, 6, (5, 5)) @ _SMOOTH.T
    fine = rng.normal(0, 2.5, (size, size))
    return image + (smooth + fine)[..., None]


def _sample_attributes(rng, n_objects):
    """Shape, colour, size names of the objects; some repeat an earlier one."""
    while True:
        attributes = []
        for k in range(n_objects):
            if k and rng.random() < _DUPLICATE_RATE:
                shape, colour, _ = attributes[rng.integers(k)]
                if rng.random() >= _DUPLICATE_COLOUR_RATE:
                    colour = list(COLOURS)[rng.integers(len(COLOURS))]
            else:
                shape = SHAPES[rng.integers(len(SHAPES))]
                colour = list(COLOURS)[rng.integers(len(COLOURS))]
            attributes.append((shape, colour, SIZES[rng.integers(len(SIZES))]))
        # Four identical objects could only be named as "four ...", which
        # names more than 3 objects: draw again.
        if max(attributes.count(a) for a in attributes) <= 3:
            return attributes


def _place(rng, radii, size):
    """Centres for objects of these radii, their extents `_GAP` apart."""
    order = np.argsort(-np.asarray(radii), kind="stable")  # largest first
    for _ in range(100):
        centres = [None] * len(radii)
        for k in order:
            r = radii[k]
            for _ in range(100):
                c = rng.uniform(r + 1, size - 1 - r, 2)
                if all(
                    max(abs(c[0] - o[0]), abs(c[1] - o[1])) >= r + radii[j] + _GAP
                    for j, o in enumerate(centres)
                    if o is not None
                ):
                    centres[k] = c
                    break
            else:
                break  # no room left: start the scene's layout again
        else:
            return centres
    raise RuntimeError("Could not place the objects: this should not happen.")


def _render(rng, n_objects, size):
    """One scene: its image, objects, and per-pixel object coverage."""
    attributes = _sample_attributes(rng, n_objects)
    radii = [rng.uniform(*_RADII[s]) for _, _, s in attributes]
    centres = _place(rng, radii, size)
    image = _background(rng, size)
    cover = np.zeros((size, size))  # how much of each pixel is an object
    owner = np.full((size, size), -1, dtype=np.int64)  # ... and which
    objects = []
    for k, ((shape, colour, size_name), r, (cx, cy)) in enumerate(
        zip(attributes, radii, centres)
    ):
        x0, y0, alpha = _coverage(shape, cx, cy, r, size)
        rgb = np.asarray(COLOURS[colour], float) + rng.uniform(
            -_COLOUR_JITTER, _COLOUR_JITTER, 3
        )
        h, w = alpha.shape
        patch = image[y0 : y0 + h, x0 : x0 + w]
        patch += alpha[..., None] * (rgb - patch)
        cover[y0 : y0 + h, x0 : x0 + w] += alpha
        owner[y0 : y0 + h, x0 : x0 + w][alpha > 0] = k
        ys, xs = np.nonzero(alpha)
        box = (
            x0 + int(xs.min()),
            y0 + int(ys.min()),
            x0 + int(xs.max()) + 1,
            y0 + int(ys.max()) + 1,
        )
        objects.append(
            {"shape": shape, "colour": colour, "size": size_name, "box": box}
        )
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image, objects, cover, owner


def _random_box(rng, size, low, high):
    w, h = rng.integers(low, high + 1, 2)
    # Proposals are rarely thinner than 1:3.
    w, h = min(w, 3 * h), min(h, 3 * w)
    x0, y0 = rng.integers(0, size - w + 1), rng.integers(0, size - h + 1)
    return (int(x0), int(y0), int(x0 + w), int(y0 + h))


def _background_box(rng, cover, size):
    """A box holding no object pixel, or None if none was found."""
    for attempt in range(40):
        high = max(6, 22 - attempt // 2)  # smaller boxes as tries fail
        x0, y0, x1, y1 = _random_box(rng, size, 4, high)
        if not cover[y0:y1, x0:x1].any():
            return (x0, y0, x1, y1)
    return None


def _partial_box(rng, objects, cover, owner, totals, size):
    """A box holding part (15% to 35%) of an object's pixels, or None."""
    for _ in range(40):
        k = int(rng.integers(len(objects)))
        bx0, by0, bx1, by1 = objects[k]["box"]
        bw, bh = bx1 - bx0, by1 - by0
        pw = max(2, int(round(rng.uniform(0.3, 0.65) * bw)))
        ph = max(2, int(round(rng.uniform(0.3, 0.65) * bh)))
        # Anchor the part on a side or corner of the object's box, then
        # let the crop reach out beyond that side, into the background.
        ax, ay = rng.integers(0, 3, 2)
        if ax == 1 and ay == 1:
            ax = 2 * int(rng.integers(2))
        x0 = (bx0, bx0 + (bw - pw) // 2, bx1 - pw)[ax]
        y0 = (by0, by0 + (bh - ph) // 2, by1 - ph)[ay]
        x1, y1 = x0 + pw, y0 + ph
        reach = rng.integers(0, 7, 2)
        if ax == 0:
            x0 -= reach[0]
        elif ax == 2:
            x1 += reach[0]
        if ay == 0:
            y0 -= reach[1]
        elif ay == 2:
            y1 += reach[1]
        x0, y0 = max(int(x0), 0), max(int(y0), 0)
        x1, y1 = min(int(x1), size), min(int(y1), size)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        crop_cover = cover[y0:y1, x0:x1]
        crop_owner = owner[y0:y1, x0:x1]
        held = [
            crop_cover[crop_owner == j].sum() / totals[j] for j in range(len(objects))
        ]
        if held[k] >= _PARTIAL_MIN and max(held) <= _PARTIAL_MAX:
            return (x0, y0, x1, y1)
    return None


def _propose_regions(rng, objects, cover, owner, n_regions, size):
    """Object boxes (jittered) and distractors, shuffled.

    Returns:
        `(boxes, region_objects, region_kinds)`, each a list of `n_regions`.
    """
    totals = [cover[owner == k].sum() for k in range(len(objects))]
    regions = []
    for k, obj in enumerate(objects):
        x0, y0, x1, y1 = np.asarray(obj["box"]) + rng.integers(-1, 2, 4)
        x0, y0 = max(int(x0), 0), max(int(y0), 0)
        x1, y1 = min(max(int(x1), x0 + 2), size), min(max(int(y1), y0 + 2), size)
        regions.append(((x0, y0, x1, y1), k, REGION_OBJECT))
    for _ in range(n_regions - len(objects)):
        # Half of the distractors are parts of objects, half background;
        # where the one kind cannot be found, the other is taken.
        kinds = [REGION_PARTIAL, REGION_BACKGROUND]
        if rng.random() < 0.5:
            kinds.reverse()
        for kind in kinds:
            if kind == REGION_PARTIAL:
                box = _partial_box(rng, objects, cover, owner, totals, size)
            else:
                box = _background_box(rng, cover, size)
            if box is not None:
                regions.append((box, -1, kind))
                break
        else:
            raise RuntimeError("Could not propose a distractor region.")
    order = rng.permutation(n_regions)
    regions = [regions[i] for i in order]
    return tuple(list(column) for column in zip(*regions))


def _relations(a, b):
    """The relation words true of object a with respect to object b."""
    ax0, ay0, ax1, ay1 = a["box"]
    bx0, by0, bx1, by1 = b["box"]
    found = []
    if ax1 <= bx0:
        found.append("left")
    if bx1 <= ax0:
        found.append("right")
    if ay1 <= by0:
        found.append("above")
    if by1 <= ay0:
        found.append("below")
    return found


def _matching(objects, values):
    """The indices of the objects whose attributes equal `values` (a dict)."""
    return tuple(
        k
        for k, o in enumerate(objects)
        if all(o[name] == v for name, v in values.items())
    )


def _describe(objects):
    """How each object can be named, and which groups can be counted.

    Returns:
        `(singles, groups)`: `singles[k]` lists the attribute sets (beside
        the shape) that single object k out; `groups` lists `(attribute
        set, members)` with 2 or 3 members, exactly the objects that match.
    """
    singles, groups = [], {}
    for obj in objects:
        names = []
        for attrs in _ATTRIBUTE_SETS:
            values = {name: obj[name] for name in ("shape",) + attrs}
            members = _matching(objects, values)
            if len(members) == 1:
                names.append(attrs)
            elif len(members) in COUNT_WORDS:
                groups[(attrs, members)] = True
        singles.append(names)
    return singles, list(groups)


def _choose(rng, options, weights=None):
    if weights is None:
        return options[rng.integers(len(options))]
    p = np.asarray(weights, float)
    return options[rng.choice(len(options), p=p / p.sum())]


def _phrase(rng, obj, attrs, determiner, refs, count=None):
    """A noun phrase: list of (token, referred objects or None)."""
    tokens = [(determiner, None)]
    postposed = (
        count is None and "colour" in attrs and rng.random() < _POSTPOSED_COLOUR_RATE
    )
    if "size" in attrs:
        tokens.append((_choose(rng, SIZE_WORDS[obj["size"]]), refs))
    colour = (_choose(rng, COLOUR_WORDS[obj["colour"]]), refs)
    if "colour" in attrs and not postposed:
        tokens.append(colour)
    singular, plural = _choose(rng, SHAPE_WORDS[obj["shape"]])
    tokens.append((plural if count else singular, refs))
    if postposed:
        tokens += [("in", None), colour]
    return tokens


def _single(rng, objects, singles, k, determiner="a"):
    weights = [_ATTRIBUTE_WEIGHTS[_ATTRIBUTE_SETS.index(a)] for a in singles[k]]
    attrs = _choose(rng, singles[k], weights)
    return _phrase(rng, objects[k], attrs, determiner, (k,))


def _counted(rng, objects, group):
    attrs, members = group
    count = len(members)
    return _phrase(
        rng, objects[members[0]], attrs, COUNT_WORDS[count], members, count=count
    )


def _words(*parts):
    """Tokens that refer to no object, from tuples of words."""
    return [(w, None) for part in parts for w in part]


def _caption_tokens(rng, objects, description):
    """One caption: list of (token, referred objects or None).

    Caption families, each drawn only where the image allows it:
    one object ("there is a red circle"), two ("a red circle and a blue
    star"), a relation ("a red circle left of the blue star"), three
    ("a red circle, a blue star and a cross"), a count ("there are two
    red squares") and a count with one more object.
    """
    singles, groups = description
    named = [k for k, names in enumerate(singles) if names]
    pairs = [
        (a, b, relation)
        for a in named
        for b in named
        if a != b
        for relation in _relations(objects[a], objects[b])
    ]
    count_and_one = [
        (group, k) for group in groups if len(group[1]) == 2
        for k in named if k not in group[1]
    ]  # fmt: skip
    feasible = (
        len(named) >= 1,
        len(named) >= 2,
        bool(pairs),
        len(named) >= 3,
        bool(groups),
        bool(count_and_one),
    )
    families = [f for f, ok in zip(_FAMILIES, feasible) if ok]
    weights = [w for w, ok in zip(_FAMILY_WEIGHTS, feasible) if ok]
    family = _choose(rng, families, weights)
    # Openings: none, "there is" / "there are", or "a picture of" and kin.
    opening = rng.integers(3)
    intro = _INTROS[rng.integers(len(_INTROS))]
    there_is = _words(((), ("there", "is"), intro)[opening])
    there_are = _words(((), ("there", "are"), intro)[opening])

    def single(k, determiner="a"):
        return _single(rng, objects, singles, k, determiner)

    if family == "single":
        return there_is + single(_choose(rng, named))
    if family == "pair":
        a, b = rng.permutation(named)[:2]
        return there_is + single(a) + _words(["and"]) + single(b)
    if family == "relation":
        a, b, relation = _choose(rng, pairs)
        words = _choose(rng, RELATION_WORDS[relation])
        # "A left of the B", "A is left of the B", "there is A left of the B".
        prefix, verb = (((), ()), ((), ("is",)), (("there", "is"), ()))[opening]
        return (
            _words(prefix) + single(a) + _words(verb, words) + single(b, "the")
        )
    if family == "triple":
        a, b, c = rng.permutation(named)[:3]
        return (
            there_is + single(a) + _words([","]) + single(b) + _words(["and"])
            + single(c)
        )  # fmt: skip
    if family == "count":
        return there_are + _counted(rng, objects, _choose(rng, groups))
    group, k = _choose(rng, count_and_one)
    return there_are + _counted(rng, objects, group) + _words(["and"]) + single(k)


def _caption(rng, objects, description, region_of):
    """A caption string and its groundings [(word_index, regions), ...]."""
    tokens = _caption_tokens(rng, objects, description)
    words = [w for w, _ in tokens]
    # "an" before a vowel: "an orange star", "an image of".
    for i in range(len(words) - 1):
        if words[i] == "a" and words[i + 1][0] in "aeiou":
            words[i] = "an"
    if rng.random() < 0.5:
        words.append(".")
    # Written as people write: "a, b and c.", sometimes capitalised. The
    # tokeniser splits it back into `words`, so the indices hold.
    text = " ".join(words).replace(" ,", ",").replace(" .", ".")
    if rng.random() < 0.5:
        text = text[0].upper() + text[1:]
    groundings = [
        (i, tuple(sorted(region_of[k] for k in refs)))
        for i, (_, refs) in enumerate(tokens)
        if refs is not None
    ]
    return text, groundings


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


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_count(name, value, low=1):
    if not _is_int(value) or value < low:
        raise ValueError(
            f"Expected `{name}` to be an integer of at least {low}. "
            f"Received: {name}={value!r}"
        )


def _check_sizes(sizes):
    if sizes is None:
        return dict(WORLD_SPLIT_SIZES)
    if not isinstance(sizes, dict) or not sizes:
        raise ValueError(
            "Expected `sizes` to be a non-empty dict {split: number of "
            f"images}}. Received: sizes={sizes!r}"
        )
    for split, count in sizes.items():
        if split not in SPLITS:
            raise ValueError(
                f"Unknown split in `sizes`: expected keys from {SPLITS}. "
                f"Received: {split!r}"
            )
        if not _is_int(count) or count < 1:
            raise ValueError(
                "Expected positive image counts in `sizes`. "
                f"Received: sizes[{split!r}]={count!r}"
            )
    return dict(sizes)


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
    _check_count("n_images", n_images)
    _check_count("min_objects", min_objects)
    _check_count("max_objects", max_objects, low=min_objects)
    if max_objects > 4:
        raise ValueError(
            f"Expected `max_objects` of at most 4: more do not fit a {IMAGE_SIZE} "
            f"x {IMAGE_SIZE} image. Received: max_objects={max_objects}"
        )
    _check_count("n_regions", n_regions, low=max_objects + 1)
    seen = set() if seen is None else seen
    images = np.empty((n_images, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    boxes = np.empty((n_images, n_regions, 4), np.int32)
    region_objects = np.empty((n_images, n_regions), np.int32)
    region_kinds = np.empty((n_images, n_regions), np.int8)
    all_objects, captions, groundings = [], [], []
    for i in range(n_images):
        while True:
            n_objects = int(rng.integers(min_objects, max_objects + 1))
            image, objects, cover, owner = _render(rng, n_objects, IMAGE_SIZE)
            key = scene_hash(objects)
            if key not in seen:
                seen.add(key)
                break
        region_boxes, owners, kinds = _propose_regions(
            rng, objects, cover, owner, n_regions, IMAGE_SIZE
        )
        images[i], boxes[i] = image, region_boxes
        region_objects[i], region_kinds[i] = owners, kinds
        region_of = {k: owners.index(k) for k in range(len(objects))}
        description = _describe(objects)
        texts = []
        for _ in range(CAPTIONS_PER_IMAGE):
            # Five different captions where the image allows it.
            for _ in range(10):
                text, grounding = _caption(rng, objects, description, region_of)
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
    _check_count("seed", seed, low=0)
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


def _grounding_path(data_dir, split):
    return os.path.join(os.fspath(data_dir), f"{split}_grounding.json")


def _world_path(data_dir, split):
    return os.path.join(os.fspath(data_dir), f"{split}_world.npz")


def write_world(data_dir, sizes=None, seed=0, min_count=WORLD_MIN_COUNT, **kwargs):
    """Draws the built-in world and writes it as a precomputed-features folder.

    Per split: `{split}_ims.npy` and `{split}_caps.txt` (by `write_split`,
    so `load_split` and the training command read them as they read the
    released data), `{split}_world.npz` (images, boxes, region_objects,
    region_kinds: read with `load_world_images`) and
    `{split}_grounding.json` (the groundings and the objects: read with
    `load_grounding`). And `vocab.json`: `Vocabulary.build` over the train
    and dev captions (all written splits if neither is drawn). The same
    arguments write the same bytes.

    Args:
        data_dir: the folder (created if needed).
        sizes: images per split; see `make_world`.
        seed: integer seed.
        min_count: the fewest occurrences a word needs to enter the
            vocabulary.
        **kwargs: passed to `make_world` (`n_regions`, `min_objects`,
            `max_objects`, `extractor`).

    Returns:
        The `Vocabulary` saved as `vocab.json`.

    Example:

    ```python
    import tempfile
    from scan_keras.data import load_grounding, load_split, write_world

    data_dir = tempfile.mkdtemp()
    vocabulary = write_world(data_dir, {"train": 30, "test": 10}, min_count=1)
    load_split(data_dir, "test").images.shape  # (10, 10, 128)
    len(load_grounding(data_dir, "test"))  # 50, one per caption
    ```
    """
    _check_count("min_count", min_count)
    world = make_world(sizes, seed=seed, **kwargs)
    data_dir = os.fspath(data_dir)
    for split, part in world.items():
        write_split(data_dir, split, part.features, part.captions)
        arrays = {
            "images": part.images,
            "boxes": part.boxes,
            "region_objects": part.region_objects,
            "region_kinds": part.region_kinds,
        }
        _write_npz(_world_path(data_dir, split), arrays)
        record = {
            "format": _GROUNDING_FORMAT,
            "captions_per_image": CAPTIONS_PER_IMAGE,
            "groundings": [
                [[i, list(regions)] for i, regions in g] for g in part.groundings
            ],
            "objects": [
                [{**o, "box": list(o["box"])} for o in objects]
                for objects in part.objects
            ],
        }
        with open(_grounding_path(data_dir, split), "w", encoding="utf-8") as f:
            json.dump(record, f, separators=(",", ":"))
    vocab_splits = [s for s in ("train", "dev") if s in world] or list(world)
    # The world's grammar writes captions that the package's own tokenizer
    # splits as nltk does (tests/test_tokenizers.py): no nltk needed, and
    # the same files with or without it.
    vocabulary = Vocabulary.build(
        [c for s in vocab_splits for c in world[s].captions],
        min_count=min_count,
        tokenizer="regex",
    )
    vocabulary.save(os.path.join(data_dir, "vocab.json"))
    return vocabulary


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(
            f"Unknown split: expected one of {SPLITS}. Received: split={split!r}"
        )


def _read_grounding_record(data_dir, split):
    _check_split(split)
    path = _grounding_path(data_dir, split)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Split {split!r} has no grounding file {path} (written by "
            "write_world)."
        )
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if (
        not isinstance(record, dict)
        or record.get("format") != _GROUNDING_FORMAT
        or not isinstance(record.get("groundings"), list)
        or not isinstance(record.get("objects"), list)
    ):
        raise ValueError(
            f"{path} is not a grounding file of write_world: expected an object "
            f"with 'format': {_GROUNDING_FORMAT!r}, 'groundings' and 'objects'."
        )
    return path, record


def load_grounding(data_dir, split):
    """Reads the word-region ground truth of a split written by `write_world`.

    Checked against the split's captions file: one entry per caption, and
    each word index inside its caption's tokens.

    Args:
        data_dir: the folder.
        split: the split's name.

    Returns:
        A list with one entry per caption: a list of `(word_index,
        regions)` pairs, `regions` a tuple of region indices (as
        `WorldSplit.groundings`).

    Raises:
        FileNotFoundError: the grounding or captions file is missing.
        ValueError: unknown split; the file is not valid JSON or not a
            grounding file; its entry count differs from the captions';
            an entry is malformed or points past its caption.
    """
    path, record = _read_grounding_record(data_dir, split)
    caps_path = split_paths(data_dir, split)[1]
    if not os.path.isfile(caps_path):
        raise FileNotFoundError(
            f"Split {split!r} has {path} but no captions file {caps_path}."
        )
    captions = _read_captions(caps_path)
    entries = record["groundings"]
    if len(entries) != len(captions):
        raise ValueError(
            f"{path} holds {len(entries)} groundings, but {caps_path} has "
            f"{len(captions)} captions: expected one grounding per caption."
        )
    groundings = []
    for c, (entry, caption) in enumerate(zip(entries, captions)):
        n_words = len(tokenize(caption))
        pairs = []
        try:
            for word_index, regions in entry:
                if not (
                    _is_int(word_index)
                    and 0 <= word_index < n_words
                    and regions
                    and all(_is_int(r) and r >= 0 for r in regions)
                ):
                    raise ValueError
                pairs.append((word_index, tuple(regions)))
        except (ValueError, TypeError):
            raise ValueError(
                f"{path}: grounding {c} is malformed or does not fit its caption "
                f"{caption!r} ({n_words} words): expected [[word_index, "
                f"[region, ...]], ...]. Received: {entry!r}"
            ) from None
        groundings.append(pairs)
    return groundings


def load_world_objects(data_dir, split):
    """The objects of each image of a split written by `write_world`.

    Returns:
        A list (one per image) of lists of dicts `{"shape", "colour",
        "size", "box"}`, `box` a tuple, as `WorldSplit.objects`.
    """
    _, record = _read_grounding_record(data_dir, split)
    return [
        [{**o, "box": tuple(o["box"])} for o in objects]
        for objects in record["objects"]
    ]


def load_world_images(data_dir, split):
    """Reads the images and region boxes of a split written by `write_world`.

    Args:
        data_dir: the folder.
        split: the split's name.

    Returns:
        `(images, boxes, region_objects)`: uint8 `(N, H, W, 3)`, int32
        `(N, R, 4)`, int32 `(N, R)`, as in `WorldSplit`.

    Raises:
        FileNotFoundError: the file `{split}_world.npz` is missing.
        ValueError: unknown split; the file is corrupt or lacks an array;
            the arrays' shapes or types disagree with each other or with
            the split's features file; a box lies outside its image.
    """
    _check_split(split)
    path = _world_path(data_dir, split)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Split {split!r} has no world file {path} (written by "
            "write_world)."
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            images, boxes, region_objects = (
                data[name] for name in ("images", "boxes", "region_objects")
            )
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is corrupt or not a world file: {err}") from None
    n = images.shape[0] if images.ndim else -1
    if (
        images.dtype != np.uint8
        or images.ndim != 4
        or images.shape[-1] != 3
        or boxes.dtype != np.int32
        or boxes.ndim != 3
        or boxes.shape[0] != n
        or boxes.shape[-1] != 4
        or region_objects.dtype != np.int32
        or region_objects.shape != boxes.shape[:2]
    ):
        raise ValueError(
            f"{path}: expected images uint8 (N, H, W, 3), boxes int32 (N, R, 4) "
            f"and region_objects int32 (N, R). Received: images {images.dtype} "
            f"{images.shape}, boxes {boxes.dtype} {boxes.shape}, region_objects "
            f"{region_objects.dtype} {region_objects.shape}"
        )
    try:
        extractor_lib._check_boxes(images, boxes)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    if (region_objects < -1).any():
        raise ValueError(f"{path}: region_objects holds values below -1.")
    ims_path = split_paths(data_dir, split)[0]
    if os.path.isfile(ims_path):
        features = np.load(ims_path, mmap_mode="r")
        if features.shape[:2] != boxes.shape[:2]:
            raise ValueError(
                f"{path} has {n} images of {boxes.shape[1]} regions, but "
                f"{ims_path} has features of shape {features.shape}."
            )
    return images, boxes, region_objects
