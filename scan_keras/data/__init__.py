"""Data for SCAN: captions to token ids, precomputed features, batches.

- `tokenize`, `Vocabulary`: captions to token ids as the reference code
  made them (`<pad>` 0, `<start>` 1, `<end>` 2, `<unk>` 3), and the
  released vocabulary JSON files.
- `load_split`, `write_split`, `PrecompSplit`, `SPLITS`: the released
  precomputed-features layout (`{split}_ims.npy`, `{split}_caps.txt`),
  memory-mapped and checked.
- `PairBatches`: shuffled batches of matching (image, caption) pairs for
  `model.fit`, one pass over the captions per epoch.
- `import_captions`, `KARPATHY_SPLIT_SIZES`, `KARPATHY_DATASETS`: the
  captions (and image ids and files) of Karpathy's split files
  (`dataset_coco.json`, `dataset_flickr30k.json`) in that layout, in the
  release's order.
- `load_reference_vocabulary`: the reference code's vocabulary, its JSON
  or its pickle, read without running code of the file.
- `import_features`, `read_image_ids`, `read_tsv_records`: region
  features from the bottom-up-attention extractor's TSV files into that
  layout, in a split's image order, in bounded memory.
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
from scan_keras.data.features_tsv import import_features, read_image_ids, read_tsv_records
from scan_keras.data.karpathy import (
    KARPATHY_DATASETS,
    KARPATHY_SPLIT_SIZES,
    import_captions,
)
from scan_keras.data.precomp import SPLITS, PrecompSplit, load_split, write_split
from scan_keras.data.reference_vocab import load_reference_vocabulary
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
    "KARPATHY_DATASETS",
    "KARPATHY_SPLIT_SIZES",
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
    "import_features",
    "read_image_ids",
    "read_tsv_records",
    "import_captions",
    "load_reference_vocabulary",
    "TOKENIZERS",
    "write_split",
    "write_toy_precomp",
    "write_world",
]
