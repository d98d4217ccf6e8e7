"""Captions to token ids: the tokeniser and the vocabulary (the words that
paper section 3.5 "Representing Sentences" embeds).

Token ids follow the reference code: `<pad>` = 0, `<start>` = 1,
`<end>` = 2, `<unk>` = 3, then the words. Every encoded caption is wrapped
as `<start> w_1 ... w_n <end>`, and any word outside the vocabulary maps
to `<unk>`. The vocabulary reads and writes the JSON files the authors
released (`{"word2idx": ..., "idx2word": ..., "idx": n}`), so ids agree
with models trained by the reference code.

A vocabulary also names the tokenizer that splits its captions
(`tokenizers.py`), saved as `"tokenizer"` in its JSON and with every model,
so that a model always reads captions as it was trained to.
"""

import collections
import json
import math
import os

import numpy as np

from scan_keras.atomic import write_json
from scan_keras.checks import check_positive_int
from scan_keras.data.tokenizers import (  # noqa: F401 (public here too)
    DEFAULT_TOKENIZER,
    TOKENIZERS,
    check_tokenizer,
    default_tokenizer,
    get_tokenizer,
    tokenize,
)

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNK)
PAD_ID, START_ID, END_ID, UNK_ID = 0, 1, 2, 3


class Vocabulary:
    """The words a model knows, each with its token id.

    Built from the ordered list of words, where a word's position is its
    id (the reference code's `idx2word`); the first four must be the
    special tokens `<pad>`, `<start>`, `<end>`, `<unk>`. Create one from
    captions with `Vocabulary.build`, or read the released JSON with
    `Vocabulary.load`.

    Args:
        words: the words in id order, special tokens first.
        tokenizer: the name of the tokenizer that splits captions, one of
            `TOKENIZERS` (see the module docstring).

    Example:

    ```python
    from scan_keras.data import Vocabulary

    captions = ["A dog runs.", "A dog sleeps.", "The cat sleeps."]
    vocabulary = Vocabulary.build(captions, min_count=2)
    vocabulary.words[4:]  # ['.', 'a', 'dog', 'sleeps'], after the 4 special tokens
    vocabulary.encode("A cat sleeps.")  # [1, 5, 3, 7, 4, 2]: "cat" is unknown
    vocabulary.encode_batch(["a dog", "dog"]).tolist()  # [[1, 5, 6, 2], [1, 6, 2, 0]]
    vocabulary.decode([1, 5, 3, 7, 4, 2])  # 'a <unk> sleeps .'
    ```
    """

    def __init__(self, words, tokenizer=DEFAULT_TOKENIZER):
        check_tokenizer(tokenizer)
        if isinstance(words, str):
            raise ValueError(
                "Expected `words` to be a list of words, not a single string. "
                f"Received: words={words[:50]!r}"
            )
        words = list(words)
        for i, word in enumerate(words):
            if not isinstance(word, str):
                raise ValueError(
                    "Expected every word to be a string. "
                    f"Received: words[{i}]={word!r}"
                )
        if tuple(words[:4]) != SPECIAL_TOKENS:
            raise ValueError(
                f"The first four words must be the special tokens {SPECIAL_TOKENS} "
                f"(ids 0 to 3), in that order. Received: words[:4]={words[:4]}"
            )
        word2idx = {}
        for i, word in enumerate(words):
            if word in word2idx:
                raise ValueError(
                    f"Every word must appear once. Received: {word!r} at ids "
                    f"{word2idx[word]} and {i}"
                )
            word2idx[word] = i
        self._words = tuple(words)
        self._word2idx = word2idx
        self.tokenizer = tokenizer
        self._split = None  # the tokenizer's function, on first use

    def tokenize(self, caption):
        """The tokens of `caption`, split by this vocabulary's tokenizer."""
        if self._split is None:
            self._split = get_tokenizer(self.tokenizer)
        return self._split(caption)

    @property
    def words(self):
        """The words in id order (a new list): `words[i]` has id `i`."""
        return list(self._words)

    @property
    def word2idx(self):
        """A new dict from each word to its id."""
        return dict(self._word2idx)

    def __len__(self):
        return len(self._words)

    def __contains__(self, word):
        return word in self._word2idx

    def __eq__(self, other):
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self._words == other._words and self.tokenizer == other.tokenizer

    __hash__ = None  # mutable-looking value object: compared by its words

    def __repr__(self):
        return (
            f"Vocabulary({len(self)} words: {list(self._words[4:9])}..., "
            f"tokenizer={self.tokenizer!r})"
        )

    @classmethod
    def build(cls, captions, min_count=4, tokenizer=None):
        """The vocabulary of a set of captions.

        Keeps the words (after tokenisation) seen at least `min_count` times,
        as the reference code did with the train and dev captions and
        `min_count=4`. Ids are given by descending count, ties broken
        alphabetically, so the result depends only on the counts, not on
        the order of the captions.

        Args:
            captions: iterable of caption strings.
            min_count: the fewest occurrences a word needs.
            tokenizer: one of `TOKENIZERS`; None for `default_tokenizer()`.

        Returns:
            A `Vocabulary`.
        """
        check_positive_int("min_count", min_count)
        tokenizer = default_tokenizer() if tokenizer is None else tokenizer
        split = get_tokenizer(tokenizer)
        counts = collections.Counter()
        for i, caption in enumerate(captions):
            if not isinstance(caption, str):
                raise ValueError(
                    "Expected `captions` to hold strings. "
                    f"Received: captions[{i}]={caption!r}"
                )
            counts.update(split(caption))
        kept = sorted(
            (word for word, count in counts.items() if count >= min_count),
            key=lambda word: (-counts[word], word),
        )
        return cls(SPECIAL_TOKENS + tuple(kept), tokenizer=tokenizer)

    @classmethod
    def load(cls, path, tokenizer=None):
        """Reads a vocabulary JSON file, such as the authors' released ones.

        The format is `{"word2idx": {word: id}, "idx2word": {"0": word,
        ...}, "idx": n, "tokenizer": name}`. `idx2word`'s keys may be
        strings (as JSON writes them) or integers; a file with only
        `word2idx` or only `idx2word` is accepted. Where both are present
        they must agree, and `idx`, if present, must be the number of
        words. `"tokenizer"` is optional (see the module docstring).

        Args:
            path: the JSON file.
            tokenizer: the tokenizer of a file that names none (by default
                `DEFAULT_TOKENIZER`); the one a file names always wins.

        Returns:
            A `Vocabulary`.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: the file is not valid JSON, lacks both keys, has ids
                that are not 0 to n-1, has disagreeing maps, or does not
                start with the four special tokens.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Vocabulary file not found: {path}")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(
                f"Vocabulary file {path} is not valid JSON: {err}"
            ) from None
        if not isinstance(data, dict) or not (
            "word2idx" in data or "idx2word" in data
        ):
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(
                f"Vocabulary file {path} must hold an object with the key "
                f"'word2idx' and/or 'idx2word'. Received: {keys}"
            )
        try:
            words = _words_from_json(data)
            name = data.get("tokenizer") or tokenizer or DEFAULT_TOKENIZER
            return cls(words, tokenizer=name)
        except ValueError as err:
            raise ValueError(f"Vocabulary file {path}: {err}") from None

    def save(self, path):
        """Writes the vocabulary in the released JSON format.

        Args:
            path: the JSON file to write (its folder must exist).
        """
        data = {
            "word2idx": dict(self._word2idx),
            "idx2word": {str(i): word for i, word in enumerate(self._words)},
            "idx": len(self._words),
            "tokenizer": self.tokenizer,
        }
        write_json(path, data)

    def _ids(self, caption):
        tokens = self.tokenize(caption)
        if not tokens:
            raise ValueError(
                "A caption must hold at least one word after tokenisation. "
                f"Received: caption={caption!r}"
            )
        lookup = self._word2idx.get
        return [START_ID] + [lookup(t, UNK_ID) for t in tokens] + [END_ID]

    def encode(self, caption: str) -> list:
        """Token ids of one caption: `[<start>, ids of its words, <end>]`.

        Args:
            caption: the caption.

        Returns:
            A list of ints; words outside the vocabulary are `<unk>` (3).

        Raises:
            ValueError: nothing is left of the caption after tokenisation.
        """
        return self._ids(caption)

    def encode_batch(self, captions, pad_to_multiple=None):
        """Token ids of several captions, padded with 0 to one length.

        Args:
            captions: a non-empty list of captions.
            pad_to_multiple: if set, round the length up to a multiple of
                it: a compiled model then sees fewer distinct shapes.

        Returns:
            int32 NumPy array `(n_captions, max_len)`, each row
            `encode(caption)` followed by zeros.
        """
        check_positive_int("pad_to_multiple", pad_to_multiple, allow_none=True)
        if isinstance(captions, str):
            raise ValueError(
                "Expected `captions` to be a list of captions, not a single "
                f"string. Received: captions={captions[:50]!r}"
            )
        rows = []
        for i, caption in enumerate(captions):
            try:
                rows.append(self._ids(caption))
            except ValueError as err:
                raise ValueError(f"captions[{i}]: {err}") from None
        if not rows:
            raise ValueError("Expected at least one caption. Received: captions=[]")
        return _pad(rows, pad_to_multiple)

    def decode(self, ids) -> str:
        """The words of a row of token ids, joined by spaces.

        Padding, `<start>` and `<end>` are skipped; `<unk>` is kept.

        Args:
            ids: iterable of token ids.

        Returns:
            A string.
        """
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(
                "Expected `ids` to be a 1-D sequence of integer token ids. "
                f"Received: ids with shape {ids.shape} and dtype {ids.dtype}"
            )
        bad = (ids < 0) | (ids >= len(self._words))
        if bad.any():
            raise ValueError(
                f"Token ids must lie in [0, {len(self._words)}). "
                f"Received: {int(ids[bad][0])}"
            )
        skip = (PAD_ID, START_ID, END_ID)
        return " ".join(self._words[i] for i in ids.tolist() if i not in skip)


def as_vocabulary(value):
    """A `Vocabulary` from what a model is given or saved: a `Vocabulary`,
    a dict `{"words": [...], "tokenizer": name}`, a word list, or None."""
    if value is None or isinstance(value, Vocabulary):
        return value
    if isinstance(value, dict) and "words" in value:
        # Models saved before the tokenizer was recorded hold no name: they
        # were trained on the regular-expression tokenizer.
        return Vocabulary(
            value["words"], tokenizer=value.get("tokenizer", DEFAULT_TOKENIZER)
        )
    return Vocabulary(list(value))


def _pad(rows, pad_to_multiple=None):
    """Stacks lists of ids into an int32 array, padded with 0."""
    lengths = np.array([len(row) for row in rows])
    width = int(lengths.max())
    if pad_to_multiple:
        width = pad_to_multiple * math.ceil(width / pad_to_multiple)
    out = np.zeros((len(rows), width), dtype=np.int32)
    # Row-major order of the True cells is the order of the ids in `rows`.
    out[np.arange(width) < lengths[:, None]] = np.fromiter(
        (i for row in rows for i in row), dtype=np.int32, count=int(lengths.sum())
    )
    return out


def _words_from_json(data):
    """The id-ordered word list of a parsed vocabulary JSON object."""
    word2idx = data.get("word2idx")
    idx2word = data.get("idx2word")
    from_word2idx = from_idx2word = None
    if word2idx is not None:
        if not isinstance(word2idx, dict):
            raise ValueError(
                "'word2idx' must be an object {word: id}. "
                f"Received: {type(word2idx).__name__}"
            )
        for word, i in word2idx.items():
            if not isinstance(i, int) or isinstance(i, bool):
                raise ValueError(
                    f"'word2idx' ids must be integers. Received: {word!r}: {i!r}"
                )
        from_word2idx = _ordered(
            {i: word for word, i in word2idx.items()}, len(word2idx), "word2idx"
        )
    if idx2word is not None:
        if not isinstance(idx2word, dict):
            raise ValueError(
                "'idx2word' must be an object {id: word}. "
                f"Received: {type(idx2word).__name__}"
            )
        by_id = {}
        for key, word in idx2word.items():
            # JSON object keys are strings: "0", "1", ...
            if isinstance(key, str) and key.isdigit():
                key = int(key)
            if not isinstance(key, int) or isinstance(key, bool):
                raise ValueError(
                    f"'idx2word' keys must be integer ids. Received: {key!r}"
                )
            if key in by_id:
                raise ValueError(f"'idx2word' has id {key} twice.")
            by_id[key] = word
        from_idx2word = _ordered(by_id, len(idx2word), "idx2word")
    if from_word2idx is not None and from_idx2word is not None:
        if from_word2idx != from_idx2word:
            if len(from_word2idx) != len(from_idx2word):
                detail = (
                    f"{len(from_word2idx)} words in 'word2idx', "
                    f"{len(from_idx2word)} in 'idx2word'"
                )
            else:
                i = next(
                    i
                    for i, (a, b) in enumerate(zip(from_word2idx, from_idx2word))
                    if a != b
                )
                detail = (
                    f"id {i} is {from_word2idx[i]!r} in 'word2idx' but "
                    f"{from_idx2word[i]!r} in 'idx2word'"
                )
            raise ValueError(f"'word2idx' and 'idx2word' disagree: {detail}")
    words = from_word2idx if from_word2idx is not None else from_idx2word
    n = data.get("idx")
    if n is not None and n != len(words):
        raise ValueError(
            f"'idx' must be the number of words, {len(words)}. Received: idx={n!r}"
        )
    return words


def _ordered(by_id, n_entries, key):
    """Words by id 0..n-1; ids that repeat, skip or overflow are errors."""
    expected = set(range(n_entries))
    if set(by_id) != expected or len(by_id) != n_entries:
        unexpected = sorted(set(by_id) - expected)[:5]
        missing = sorted(expected - set(by_id))[:5]
        raise ValueError(
            f"'{key}' ids must be 0 to {n_entries - 1}, each once. Received: "
            f"{len(by_id)} distinct ids for {n_entries} entries"
            + (f", ids out of range {unexpected}" if unexpected else "")
            + (f", missing ids {missing}" if missing else "")
        )
    return [by_id[i] for i in range(n_entries)]
