"""scan-keras: Stacked Cross Attention for Image-Text Matching in Keras 3."""

# Importing the package registers every serialisable class (layers, loss,
# model, optimizer), so `keras.saving.load_model` finds them after
# `import scan_keras`.
from scan_keras import baselines, data, layers, losses, models, optimizers

__version__ = "0.1.0"

__all__ = ["baselines", "data", "layers", "losses", "models", "optimizers", "__version__"]
