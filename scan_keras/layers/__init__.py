"""SCAN's layers: encoders (section 3.4) and Stacked Cross Attention (3.1-3.2)."""

from scan_keras.layers.attention import StackedCrossAttention
from scan_keras.layers.encoders import CaptionEncoder, RegionEncoder

__all__ = ["CaptionEncoder", "RegionEncoder", "StackedCrossAttention"]
