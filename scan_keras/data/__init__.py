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
- `make_world`, `write_world`, `WorldSplit`, `load_grounding`,
  `load_world_images`, `load_world_objects`: the built-in world, rendered
  scenes of shapes with region features from a frozen CNN
  (`RegionFeatureExtractor`) and captions whose words are grounded in
  regions, so that what SCAN attends to can be checked.
"""

from scan_keras.data.batches import PairBatches
from scan_keras.data.extractor import RegionFeatureExtractor
from scan_keras.data.precomp import SPLITS, PrecompSplit, load_split, write_split
from scan_keras.data.toy import write_toy_precomp
from scan_keras.data.vocabulary import TOKENIZERS, Vocabulary, get_tokenizer, tokenize
from scan_keras.data.world import (
    WORLD_SPLIT_SIZES,
    WorldSplit,
    load_grounding,
    load_world_images,
    load_world_objects,
    make_world,
    write_world,
)

__all__ = [
    "SPLITS",
    "WORLD_SPLIT_SIZES",
    "PairBatches",
    "PrecompSplit",
    "RegionFeatureExtractor",
    "Vocabulary",
    "WorldSplit",
    "load_grounding",
    "load_split",
    "load_world_images",
    "load_world_objects",
    "make_world",
    "tokenize",
    "get_tokenizer",
    "TOKENIZERS",
    "write_split",
    "write_toy_precomp",
    "write_world",
]
