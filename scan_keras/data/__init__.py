"""Data for SCAN: captions to token ids, precomputed features, batches.

- `tokenize`, `Vocabulary`: captions to token ids as the reference code
  made them (`<pad>` 0, `<start>` 1, `<end>` 2, `<unk>` 3), and the
  released vocabulary JSON files.
- `load_split`, `write_split`, `PrecompSplit`, `SPLITS`: the released
  precomputed-features layout (`{split}_ims.npy`, `{split}_caps.txt`),
  memory-mapped and checked.
- `PairBatches`: shuffled batches of matching (image, caption) pairs for
  `model.fit`, one pass over the captions per epoch.
- `write_toy_precomp`: a small learnable dataset in that layout, for tests
  and quick examples.
"""

from scan_keras.data.batches import PairBatches
from scan_keras.data.precomp import SPLITS, PrecompSplit, load_split, write_split
from scan_keras.data.toy import write_toy_precomp
from scan_keras.data.vocabulary import Vocabulary, tokenize

__all__ = [
    "SPLITS",
    "PairBatches",
    "PrecompSplit",
    "Vocabulary",
    "load_split",
    "tokenize",
    "write_split",
    "write_toy_precomp",
]
