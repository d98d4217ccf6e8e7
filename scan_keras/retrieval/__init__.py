"""Search beyond the test sets: a dual-encoder shortlist in a vector index,
re-ranked by SCAN.

- `TwoStageSearch`: build an index folder of a split, open it, and query it
  with a caption (`query_text`) or an image (`query_image`).
- `two_stage_metrics`, `two_stage_matrix`: the paper's recalls of the
  two-stage ranking, so that its loss against full SCAN is measured.
- `DualEncoder`, `DUAL_ENCODERS`: one vector per image and per caption.
- `EncodedStore`, `StoreWriter`: encoded regions and words on disk,
  memory-mapped.
- `IndexWriter`, `INDEX_KINDS`: the index folder and the FAISS index kinds.

FAISS is optional: `pip install "scan-keras[search]"`.
"""

from scan_keras.retrieval.builder import IndexWriter
from scan_keras.retrieval.dual import DUAL_ENCODERS, DualEncoder
from scan_keras.retrieval.ranking import two_stage_matrix, two_stage_metrics
from scan_keras.retrieval.store import EncodedStore, StoreWriter
from scan_keras.retrieval.two_stage import TwoStageSearch
from scan_keras.retrieval.vector_index import INDEX_KINDS

__all__ = [
    "DUAL_ENCODERS",
    "INDEX_KINDS",
    "DualEncoder",
    "EncodedStore",
    "IndexWriter",
    "StoreWriter",
    "TwoStageSearch",
    "two_stage_matrix",
    "two_stage_metrics",
]
