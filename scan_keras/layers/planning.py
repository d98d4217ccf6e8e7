"""How much of the all-pairs work runs at once: chunks of captions, tiles
of images.

`plan_tiles` is a pure function of the shapes and an element budget, so a
test passes a small budget instead of patching globals; `map_rows` runs a
function over the planned blocks.
"""

import keras
from keras import ops

from scan_keras.layers import platform

# Automatic chunking keeps each (images, regions, captions, words) tensor
# under this many elements: on a GPU enough to keep the device busy, on a
# CPU small enough to stay in the caches (docs/performance.md).
AUTO_CHUNK_ELEMENTS = {"accelerator": 2**25, "cpu": 2**20}
# ... but never fewer captions than this in a chunk: the product's width is
# chunk x words, and a thin product wastes most of the arithmetic units.
MIN_AUTO_CHUNK = 16
# When even that many captions against all images exceed the budget (1000
# images on a CPU), the images are tiled too, with this many captions a
# chunk (the fastest tiling measured, docs/performance.md).
TILED_CHUNK = 32


def default_budget():
    """The element budget of a chunk on the device the backend uses."""
    return AUTO_CHUNK_ELEMENTS["accelerator" if platform.on_accelerator() else "cpu"]


def balanced(n, block):
    """Evens out blocks: n rows in as many blocks as `block` needs, equal.

    1000 images in blocks of at most 101 become 10 blocks of 100, not 9 of
    101 and a remainder of 91 (one more shape to compile).
    """
    n_blocks = -(-n // block)
    return -(-n // n_blocks)


def plan_tiles(
    images_shape,
    captions_shape,
    budget,
    chunk_size=None,
    min_chunk=MIN_AUTO_CHUNK,
    tiled_chunk=TILED_CHUNK,
):
    """Images and captions scored at once: `(image_block, chunk)`.

    Args:
        images_shape: `(I, R, ...)`; sizes may be None while tracing.
        captions_shape: `(C, W, ...)`.
        budget: the most elements of one `(I, R, C, W)` tensor.
        chunk_size: captions a chunk, fixed by the user (then images are
            not tiled), or None to plan.
        min_chunk: the fewest captions a chunk before images are tiled.
        tiled_chunk: captions a chunk when images are tiled.

    Returns:
        `(image_block, chunk)`; None means all of them (or sizes unknown).
    """
    n_images, n_regions = images_shape[0], images_shape[1]
    n_captions, n_words = captions_shape[0], captions_shape[1]
    if n_captions is None:
        return None, None
    if chunk_size is not None:
        return None, chunk_size
    if None in (n_images, n_regions, n_words):
        return None, None
    per_caption = max(1, n_images * n_regions * n_words)
    if min_chunk * per_caption <= budget:
        return None, balanced(n_captions, budget // per_caption)
    # A 5K test set scored one caption at a time ran for minutes: tile the
    # images instead of thinning the product.
    chunk = balanced(n_captions, min(n_captions, tiled_chunk))
    image_block = max(1, budget // (n_regions * n_words * chunk))
    return balanced(n_images, image_block), chunk


def _rows(arrays, start, stop):
    """Rows `start:stop` of each array of a tuple; None stays None."""
    return tuple(None if x is None else x[start:stop] for x in arrays)


def map_rows(fn, arrays, block, axis):
    """Applies `fn` to `block` rows at a time of a tuple of arrays.

    `fn` returns a tensor, or a tuple of tensors, whose `axis` runs over
    the rows it was given; the results are joined along that axis. On JAX
    one body is compiled for the whole blocks and looped over (`ops.map`);
    the remaining rows are one more call, not a padded block (padding
    measured slower). Other backends loop in Python. A `block` of None, or
    of all the rows, is one call.
    """
    n = next(x for x in arrays if x is not None).shape[0]
    if block is None or block >= n:
        return fn(arrays)
    if not platform.compiled_loop():
        parts = [
            fn(_rows(arrays, start, start + block)) for start in range(0, n, block)
        ]
    else:
        n_whole = (n // block) * block
        stacked = ops.map(
            fn,
            tuple(
                None if x is None else ops.reshape(x, (-1, block) + tuple(x.shape[1:]))
                for x in _rows(arrays, 0, n_whole)
            ),
        )

        def unblock(x):
            # (n_blocks, ..., block, ...) -> (..., n_blocks * block, ...)
            x = ops.moveaxis(x, 0, axis)
            shape = tuple(x.shape)
            return ops.reshape(x, shape[:axis] + (n_whole,) + shape[axis + 2 :])

        parts = [keras.tree.map_structure(unblock, stacked)]
        if n_whole < n:
            parts.append(fn(_rows(arrays, n_whole, n)))
    if len(parts) == 1:
        return parts[0]
    return keras.tree.map_structure(
        lambda *xs: ops.concatenate(xs, axis=axis), *parts
    )
