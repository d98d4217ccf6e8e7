"""Deprecated: the fused kernel moved to `scan_keras.layers.pallas`
(`pallas.kernel` for the kernel, `pallas.tiles` for its tiles)."""

import warnings

from scan_keras.layers.pallas.kernel import (  # noqa: F401
    FUSED_NORMS,
    check_supported,
    similarities,
    with_portable_gradients,
)
from scan_keras.layers.pallas.tiles import (  # noqa: F401
    DEFAULT_TILES,
    padded_words,
    parse_tiles,
    region_parts,
)

warnings.warn(
    "scan_keras.layers.pallas_attention is deprecated: import "
    "scan_keras.layers.pallas.kernel (and .tiles) instead.",
    DeprecationWarning,
    stacklevel=2,
)
