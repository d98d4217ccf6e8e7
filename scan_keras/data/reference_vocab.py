"""The reference code's vocabularies, JSON or pickled, read without running code.

The SCAN code ships its vocabularies as JSON (`{data_name}_vocab.json`,
such as `f30k_precomp_vocab.json`: `{"word2idx", "idx2word", "idx"}`).
Older releases, and the VSE++ code SCAN builds on, pickled the `Vocabulary`
object itself (`vocab/f30k_precomp_vocab.pkl`): an instance of class
`Vocabulary` of the reference's module `vocab`, holding the same three
attributes.

Unpickling runs whatever code a file names, so a pickle is read here by an
unpickler that knows one name, the reference's class, and builds in its
place a stand-in that only keeps the attributes it is given. Any other name
in the file (a function, another class) is refused before it is looked up.
Files written by Python 2 (the reference code's) hold some words as byte
strings: they are decoded as UTF-8.

Either way, the result is a `Vocabulary` whose ids equal the reference's,
with the tokenizer the reference code split captions with (`"nltk"`).
"""

import os
import pickle

from scan_keras.data.vocabulary import SPECIAL_TOKENS, Vocabulary, _words_from_json

# The tokenizer the reference code used: nltk's word tokenizer.
REFERENCE_TOKENIZER = "nltk"

# The only globals a reference vocabulary pickle names: its class, pickled
# from the reference's `vocab` module or from a script run as __main__.
_ALLOWED = {("vocab", "Vocabulary"), ("__main__", "Vocabulary")}
_PICKLE_EXTENSIONS = (".pkl", ".pickle")


class _Refused(ValueError):
    """A pickle named a global other than the reference's class."""


class _ReferenceVocabularyState:
    """Stands in for the reference's `vocab.Vocabulary`: keeps its state, runs nothing."""

    def __init__(self, *args, **kwargs):
        # Old protocols may call the class; arguments mean nothing here.
        self.__dict__["_state"] = None

    def __setstate__(self, state):
        self.__dict__["_state"] = state


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        # "bytes": Python 2 `str` objects stay bytes, decoded below as UTF-8
        # (the default, ASCII, would fail on accented words).
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ReferenceVocabularyState
        raise _Refused(
            f"Refusing to load {self._path}: it names the global "
            f"{module}.{name}, and a reference vocabulary pickle names only "
            "its class vocab.Vocabulary. Loading anything else could run "
            "code stored in the file; nothing of it was run."
        )


def _text(value, path, what):
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: {what} is not UTF-8 text: {err}") from None
    return value


def _state_of(obj, path):
    """The attribute dict of the unpickled object, keys and words as str."""
    if isinstance(obj, _ReferenceVocabularyState):
        state = obj.__dict__.get("_state")
        # A class with __slots__ pickles (dict, slots): merge them.
        if isinstance(state, tuple) and len(state) == 2:
            merged = dict(state[0] or {})
            merged.update(state[1] or {})
            state = merged
    elif isinstance(obj, dict):
        state = obj  # a pickled dict of the same keys: nothing to build
    else:
        raise ValueError(
            f"{path} holds a {type(obj).__name__}, not the reference's "
            "vocab.Vocabulary object."
        )
    if not isinstance(state, dict):
        raise ValueError(
            f"{path}: the pickled vocab.Vocabulary holds no attributes "
            f"(its state is {type(state).__name__})."
        )
    state = {_text(k, path, f"attribute name {k!r}"): v for k, v in state.items()}
    out = {}
    if "idx" in state:
        out["idx"] = state["idx"]
    for key, decode_keys in (("word2idx", True), ("idx2word", False)):
        table = state.get(key)
        if table is None:
            continue
        if not isinstance(table, dict):
            raise ValueError(
                f"{path}: '{key}' must be a dict. Received: {type(table).__name__}"
            )
        decoded = {}
        for k, v in table.items():
            if decode_keys:
                k = _text(k, path, f"the word of id {v!r} in 'word2idx'")
            else:
                v = _text(v, path, f"the word of id {k!r} in 'idx2word'")
            if k in decoded:
                # Python 2 kept a byte string and a unicode string apart.
                raise ValueError(
                    f"{path}: '{key}' holds {k!r} twice once its byte strings "
                    "are decoded as UTF-8."
                )
            decoded[k] = v
        out[key] = decoded
    if "word2idx" not in out and "idx2word" not in out:
        raise ValueError(
            f"{path}: the pickled vocabulary has neither 'word2idx' nor "
            f"'idx2word'. Received attributes: {sorted(state)}"
        )
    return out


def _load_pickle(path):
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, path).load()
    except _Refused:
        raise
    except Exception as err:  # truncated, not a pickle, a refused opcode ...
        detail = " ".join(f"{type(err).__name__}: {err}".split())
        raise ValueError(
            f"{path} is not a readable vocabulary pickle ({detail})."
        ) from None
    return _state_of(obj, path)


def _is_pickle(path):
    if path.lower().endswith(_PICKLE_EXTENSIONS):
        return True
    if path.lower().endswith(".json"):
        return False
    # Another name: protocols 2 and above start with the PROTO opcode.
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"


def load_reference_vocabulary(path, tokenizer=REFERENCE_TOKENIZER):
    """Reads a vocabulary of the reference code: its JSON or its pickle.

    A `.json` file is read by `Vocabulary.load` (a `"tokenizer"` the file
    names wins over `tokenizer`). A `.pkl` / `.pickle` file is unpickled
    safely (see the module docstring): only the class `vocab.Vocabulary`
    (or `__main__.Vocabulary`) may appear in it. Another name is sniffed:
    pickle if it starts as protocol 2+ does, else JSON.

    Ids are the reference's: word `idx2word[i]` has id `i`, and ids 0 to 3
    must be `<pad>`, `<start>`, `<end>`, `<unk>`, as the reference's
    `build_vocab` added them first.

    Args:
        path: the vocabulary file, e.g. `vocab/f30k_precomp_vocab.pkl`.
        tokenizer: the tokenizer of the result (of a JSON file that names
            none): `"nltk"` (the reference's, the default), or another of
            `TOKENIZERS`, e.g. `"regex"` where nltk is not installed.

    Returns:
        A `Vocabulary`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the pickle names any other global (nothing of it is
            run), is truncated or not a pickle, is not a vocabulary, has
            words that are not UTF-8, ids that are not 0 to n-1 or maps that
            disagree, or does not start with the four special tokens.

    Example:

    ```python
    from scan_keras.data import load_reference_vocabulary

    vocabulary = load_reference_vocabulary("vocab/f30k_precomp_vocab.pkl")
    vocabulary.words[:4]  # ['<pad>', '<start>', '<end>', '<unk>']
    vocabulary.tokenizer  # 'nltk'
    ```
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Vocabulary file not found: {path}")
    if not _is_pickle(path):
        return Vocabulary.load(path, tokenizer=tokenizer)
    state = _load_pickle(path)
    try:
        words = _words_from_json(state)
    except ValueError as err:
        raise ValueError(f"Vocabulary file {path}: {err}") from None
    if tuple(words[:4]) != SPECIAL_TOKENS:
        raise ValueError(
            f"Vocabulary file {path}: ids 0 to 3 must be {SPECIAL_TOKENS}, as "
            "the reference code's build_vocab adds them first. Received: "
            f"{words[:4]}"
        )
    try:
        return Vocabulary(words, tokenizer=tokenizer)
    except ValueError as err:
        raise ValueError(f"Vocabulary file {path}: {err}") from None
