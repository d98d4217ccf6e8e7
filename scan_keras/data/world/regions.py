"""Region proposals: object boxes and distractors, as a detector proposes them.

Each image gets `n_regions` boxes: each object's box (jittered by a pixel)
and distractors (crops of pure background, crops holding 15% to 35% of an
object's pixels), in shuffled order.
"""

import numpy as np

# Region kinds, kept in `WorldSplit.region_kinds`.
REGION_OBJECT, REGION_PARTIAL, REGION_BACKGROUND = 0, 1, 2

# The share of an object's pixels a partial crop holds: a visible piece,
# clearly less than half.
_PARTIAL_MIN, _PARTIAL_MAX = 0.15, 0.35


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


def propose_regions(rng, objects, cover, owner, n_regions, size):
    """Object boxes (jittered) and distractors, shuffled.

    Args:
        rng: a `np.random.Generator`, advanced by the call.
        objects: the scene's objects, as `render_scene` returns them.
        cover: float `(size, size)`, how much of each pixel is an object.
        owner: int `(size, size)`, which object each pixel is (-1 for none).
        n_regions: regions to propose, more than the objects.
        size: side of the image in pixels.

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
