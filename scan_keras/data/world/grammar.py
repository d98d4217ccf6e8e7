"""The captions' grammar, and which region(s) each of their words names.

A small compositional language (synonyms, templates, counts, relations)
whose every caption is true of its image; each colour, size and shape word
comes with the region(s) of the object(s) it names: the ground truth.
"""

import numpy as np

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

_POSTPOSED_COLOUR_RATE = 0.15  # "a box in red"
# How often a single object is named by each attribute set, where that
# set singles it out (the shape word is always there).
_ATTRIBUTE_SETS = (("colour",), ("size", "colour"), (), ("size",))
_ATTRIBUTE_WEIGHTS = (5.0, 3.0, 1.0, 1.0)
# Caption kinds, and their odds where the image allows them.
_FAMILIES = ("single", "pair", "relation", "triple", "count", "count_pair")
_FAMILY_WEIGHTS = (2.0, 2.0, 3.0, 1.0, 1.5, 0.5)


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


def describe(objects):
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


def make_caption(rng, objects, description, region_of):
    """A caption string and its groundings [(word_index, regions), ...].

    Args:
        rng: a `np.random.Generator`, advanced by the call.
        objects: the image's objects, as `render_scene` returns them.
        description: `describe(objects)`.
        region_of: dict {object index: index of the object's box region}.
    """
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

