"""SCAN's layers: encoders (section 3.4), Stacked Cross Attention (3.1-3.2)
and the global-embedding baseline's similarity."""

from scan_keras.layers.attention import StackedCrossAttention
from scan_keras.layers.encoders import CaptionEncoder, RegionEncoder
from scan_keras.layers.global_similarity import GlobalSimilarity

__all__ = [
    "CaptionEncoder",
    "GlobalSimilarity",
    "RegionEncoder",
    "StackedCrossAttention",
]
