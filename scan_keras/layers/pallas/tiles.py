"""The fused kernel's tiles: sizes Triton accepts (powers of two), planned
in plain Python so the layer can ask without importing JAX."""

import math

# Tile shapes: the starting point for tuning on the GPU (`benchmarks/gpu.sh
# pallas-tiles` sweeps them). The smallest region part is 4 rows, and a Triton
# product needs at least 16: hence at least 4 images a tile. Compiled for an
# H100 (sm_90) by Triton 3.9 without a GPU, t2i at 4 images x 64 words takes
# 245 registers a thread with 8 warps and spills none (4 warps spill 1 KB);
# 8 images a tile would need 256 KB of shared memory (the tile's block-
# diagonal Gram matrix is an operand), more than an H100 has.
DEFAULT_TILES = {
    "images_per_block": 4,
    "columns": 64,
    "k_block": 32,
    "group": 8,
    "num_warps": 8,
    "num_stages": 2,
}
_REGION_MULTIPLE = 4


def parse_tiles(text):
    """Tiles written short, as the benchmarks take them: `"4x64"` (images x
    words a tile), `"4x64w8"` (and 8 Triton warps), `"4x64w8s3"` (and 3
    pipeline stages)."""
    shape, _, rest = text.partition("w")
    warps, _, stages = rest.partition("s")
    try:
        images, columns = (int(n) for n in shape.split("x"))
        tiles = {"images_per_block": images, "columns": columns}
        if warps:
            tiles["num_warps"] = int(warps)
        if stages:
            tiles["num_stages"] = int(stages)
    except ValueError:
        raise ValueError(
            f"Expected tiles such as '4x64', '4x64w8' or '4x64w8s3'. Received: {text!r}"
        ) from None
    return tiles


def next_power_of_two(n):
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def padded_words(n_words):
    """Words a caption takes in a tile: a power of two, at least 8."""
    return max(8, next_power_of_two(n_words))


def round_up(n, multiple):
    return -(-n // multiple) * multiple


def region_parts(n_regions):
    """Power-of-two parts of the padded regions, largest first: 36 -> (32, 4)."""
    padded = round_up(n_regions, _REGION_MULTIPLE)
    return tuple(
        1 << b for b in reversed(range(padded.bit_length())) if padded >> b & 1
    )


def group_tiles(n_tiles, group):
    """Image tiles a group (see `similarities`): `group`, or a divisor of
    `n_tiles` not below half of it (no padding), and never above `n_tiles`."""
    if group >= n_tiles:
        return n_tiles
    for divisor in range(group, (group + 1) // 2 - 1, -1):
        if n_tiles % divisor == 0:
            return divisor
    return group
