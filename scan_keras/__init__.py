"""scan-keras: Stacked Cross Attention for Image-Text Matching in Keras 3."""

# Importing the package registers every serialisable class (layers, loss,
# model), so `keras.saving.load_model` finds them after `import scan_keras`.
from scan_keras import data, layers, losses, models

__version__ = "0.1.0"

__all__ = ["data", "layers", "losses", "models", "__version__"]
