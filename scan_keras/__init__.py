"""scan-keras: Stacked Cross Attention for Image-Text Matching in Keras 3."""

from scan_keras import layers, losses

__version__ = "0.1.0"

__all__ = ["layers", "losses", "__version__"]
