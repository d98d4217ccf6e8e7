"""Batches of matching (image, caption) pairs for `model.fit`.

As in the reference data loader, an epoch is one pass over the captions:
every caption comes once, with its own image, so each image appears
`captions_per_image` times per epoch. The contrastive loss takes its
negatives from the other pairs of the same batch.
"""

import math
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np

from scan_keras.checks import check_positive_int
from scan_keras.data.precomp import PrecompSplit
from scan_keras.data.vocabulary import Vocabulary


def _check_non_negative_int(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ValueError(
            f"Expected `{name}` to be a non-negative integer. "
            f"Received: {name}={value!r}"
        )


class PairBatches(keras.utils.PyDataset):
    """Shuffled batches of (image features, caption token ids) pairs.

    Each batch is a dict `{"features": float32 (B, n_regions, img_dim),
    "token_ids": int32 (B, W)}`: row b of both is one matching pair. W is
    the longest caption of the batch (`<start>` and `<end>` included),
    rounded up to a multiple of `pad_to_multiple` if set; shorter captions
    are padded with 0. One exception: where batches 0 and 1 of an epoch
    would have the same W, batch 0 gets one more column of padding (or
    `pad_to_multiple` more), because Keras' TensorFlow backend fixes the
    shape of every axis on which those two batches agree. A dict, not a
    tuple, so that Keras passes it whole to the model as `x`, with no `y`.

    The captions are tokenised once, when the object is made. Features are
    read per batch from the split (a memory-mapped file), and each read is
    checked for NaN and infinity. With `workers > 0`, threads read the
    next batches of the epoch while the model trains on the current one.
    They are the dataset's own, not Keras' `workers` enqueuer: that one
    carries batches it read ahead over into the next epoch, so which
    batches an epoch sees would depend on thread timing.

    The order of epoch e is a permutation drawn from
    `np.random.default_rng([seed, e])`: it depends on the seed and the
    epoch alone, so a resumed run can replay the order of the epoch it
    resumes at (`set_epoch`). The counter `epoch` starts at 0 and advances
    in `on_epoch_end`. Keras also calls `on_epoch_end` once as `fit`
    starts, so left alone the counter runs ahead of Keras' epochs (each
    epoch still gets a new order); to tie the order to Keras' epoch, call
    `set_epoch(epoch)` from a callback's `on_epoch_begin`, as
    `scan_keras.callbacks.EpochShuffle` does. Pass `shuffle=False` to
    `fit`: Keras would otherwise shuffle the batches once more, with its
    own random state.

    Args:
        split: the `PrecompSplit` to draw pairs from (see `load_split`).
        vocabulary: the `Vocabulary` that encodes the captions.
        batch_size: pairs per batch (128 in the paper).
        shuffle: draw a new order each epoch; otherwise caption order.
        seed: non-negative integer seed of the shuffling.
        pad_to_multiple: round the caption axis up to a multiple of this,
            so that a compiled model sees fewer distinct shapes.
        drop_remainder: drop the last batch if it is not full, e.g. when a
            batch must split evenly across devices.
        workers: threads reading batches ahead (0: read each batch when
            asked). They read at most `2 * workers` batches ahead.

    Example:

    ```python
    import tempfile
    from scan_keras.data import PairBatches, load_split, write_toy_precomp

    data_dir = tempfile.mkdtemp()
    vocabulary = write_toy_precomp(data_dir)
    batches = PairBatches(load_split(data_dir, "train"), vocabulary, batch_size=64)
    len(batches)  # 16: 1000 captions in batches of 64
    batch = batches[0]
    batch["features"].shape  # (64, 6, 32)
    batch["token_ids"].shape  # (64, W), W the longest caption of the batch
    ```
    """

    def __init__(
        self,
        split,
        vocabulary,
        batch_size=128,
        shuffle=True,
        seed=0,
        pad_to_multiple=None,
        drop_remainder=False,
        workers=0,
    ):
        if not isinstance(split, PrecompSplit):
            raise ValueError(
                "Expected `split` to be a PrecompSplit (see `load_split`). "
                f"Received: split={type(split).__name__}"
            )
        if not isinstance(vocabulary, Vocabulary):
            raise ValueError(
                "Expected `vocabulary` to be a Vocabulary. "
                f"Received: vocabulary={type(vocabulary).__name__}"
            )
        check_positive_int("batch_size", batch_size)
        check_positive_int("pad_to_multiple", pad_to_multiple, allow_none=True)
        _check_non_negative_int("seed", seed)
        _check_non_negative_int("workers", workers)
        if drop_remainder and split.n_captions < batch_size:
            raise ValueError(
                f"With drop_remainder=True, split {split.split!r} "
                f"({split.n_captions} captions) gives no full batch. "
                f"Received: batch_size={batch_size}"
            )
        # Keras' own workers stay off (see the class docstring).
        super().__init__(workers=1, use_multiprocessing=False)
        self.prefetch_workers = int(workers)
        self._pool = None
        self._pending = {}  # batch index -> Future, for the current epoch
        self.split = split
        self.vocabulary = vocabulary
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.pad_to_multiple = pad_to_multiple
        self.drop_remainder = bool(drop_remainder)
        self._token_ids, self._offsets = self._tokenize_all()
        self._lengths = np.diff(self._offsets)
        self.set_epoch(0)

    def _tokenize_all(self):
        # One flat array and offsets: a list of 600K small arrays (COCO)
        # would cost about 100 bytes of overhead each.
        flat, lengths = [], np.empty(self.split.n_captions, dtype=np.int64)
        for c, caption in enumerate(self.split.captions):
            try:
                ids = self.vocabulary.encode(caption)
            except ValueError as err:
                where = self.split.captions_path or f"split {self.split.split!r}"
                raise ValueError(f"{where}, line {c + 1}: {err}") from None
            flat.extend(ids)
            lengths[c] = len(ids)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return np.asarray(flat, dtype=np.int32), offsets

    def _width(self, captions):
        width = int(self._lengths[captions].max())
        if self.pad_to_multiple:
            width = self.pad_to_multiple * math.ceil(width / self.pad_to_multiple)
        return width

    def set_epoch(self, epoch):
        """Selects the epoch whose order the batches follow.

        Args:
            epoch: the 0-based epoch.
        """
        _check_non_negative_int("epoch", epoch)
        self.epoch = int(epoch)
        n = self.split.n_captions
        if self.shuffle:
            self._order = np.random.default_rng([self.seed, self.epoch]).permutation(n)
        else:
            self._order = np.arange(n)
        # Batches read ahead in another epoch's order are not this epoch's.
        for future in self._pending.values():
            future.cancel()
        self._pending = {}

    def on_epoch_end(self):
        self.set_epoch(self.epoch + 1)

    def __len__(self):
        n = self.split.n_captions
        if self.drop_remainder:
            return n // self.batch_size
        return math.ceil(n / self.batch_size)

    def batch_captions(self, index):
        """The caption indices of batch `index` in the current epoch."""
        return self._batch_captions(self._order, index)

    def _batch_captions(self, order, index):
        if not isinstance(index, (int, np.integer)) or not 0 <= index < len(self):
            raise IndexError(
                f"Batch index out of range [0, {len(self)}). Received: {index!r}"
            )
        start = int(index) * self.batch_size
        return order[start : start + self.batch_size]

    def __getitem__(self, index):
        if not self.prefetch_workers:
            return self._batch(self._order, index)
        self._batch_captions(self._order, index)  # checks the index
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.prefetch_workers)
        future = self._pending.pop(int(index), None)
        if future is None:
            future = self._pool.submit(self._batch, self._order, int(index))
        # Each read takes the epoch's order as an argument: a later
        # set_epoch cannot change a batch already being read.
        last = min(int(index) + 2 * self.prefetch_workers, len(self) - 1)
        for i in range(int(index) + 1, last + 1):
            if i not in self._pending:
                self._pending[i] = self._pool.submit(self._batch, self._order, i)
        return future.result()

    def _batch(self, order, index):
        captions = self._batch_captions(order, index)
        starts, stops = self._offsets[captions], self._offsets[captions + 1]
        width = self._width(captions)
        if index == 0 and len(self) > 1 and width == self._width(
            self._batch_captions(order, 1)
        ):
            # Keras on TensorFlow reads batches 0 and 1 for the dataset's
            # signature and fixes every axis they agree on: a token axis
            # fixed there would reject any later, longer batch. More
            # padding (masked like all padding) keeps the axis free.
            width += self.pad_to_multiple or 1
        # All rows at once, without a Python loop that reader threads would
        # run under the GIL: column j of a row is its token j, or padding 0.
        columns = np.arange(width)
        inside = columns < (stops - starts)[:, None]
        flat_index = np.where(inside, starts[:, None] + columns, 0)
        token_ids = np.where(inside, self._token_ids[flat_index], 0).astype(np.int32)
        features = self.split.image_features(self.split.image_of_caption(captions))
        return {"features": features, "token_ids": token_ids}
