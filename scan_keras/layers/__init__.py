"""SCAN's layers: the encoders (paper sections 3.4 "Representing images with
Bottom-Up Attention" and 3.5 "Representing Sentences"), Stacked Cross
Attention (sections 3.1 "Image-Text Stacked Cross Attention" and 3.2
"Text-Image Stacked Cross Attention") and the similarities of the models
without attention (Table 3): the global embedding's and Sum-Max."""

from scan_keras.layers.attention import StackedCrossAttention
from scan_keras.layers.encoders import CaptionEncoder, RegionEncoder
from scan_keras.layers.global_similarity import GlobalSimilarity
from scan_keras.layers.sum_max import SumMaxSimilarity

__all__ = [
    "CaptionEncoder",
    "GlobalSimilarity",
    "RegionEncoder",
    "StackedCrossAttention",
    "SumMaxSimilarity",
]
