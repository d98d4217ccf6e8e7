"""load_reference_vocabulary: the reference's JSON and pickled vocabularies,
read with the reference's ids and without running code of the file."""

import json
import os
import pickle
import sys
import types

import pytest

from scan_keras.data import Vocabulary, load_reference_vocabulary

# Independent of the Keras backend (see conftest.py).
pytestmark = pytest.mark.once

WORDS = ["<pad>", "<start>", "<end>", "<unk>", "a", "dog", "café", "runs"]


def _reference_class(module="vocab"):
    """A class pickled as the reference's `vocab.Vocabulary` (its code, trimmed)."""

    class Vocabulary:
        def __init__(self):
            self.word2idx = {}
            self.idx2word = {}
            self.idx = 0

        def add_word(self, word):
            if word not in self.word2idx:
                self.word2idx[word] = self.idx
                self.idx2word[self.idx] = word
                self.idx += 1

    Vocabulary.__module__ = module
    Vocabulary.__qualname__ = "Vocabulary"
    return Vocabulary


def _reference_vocab(words=WORDS, module="vocab"):
    vocab = _reference_class(module)()
    for word in words:
        vocab.add_word(word)
    return vocab


def _dumps(obj, protocol):
    """pickle.dumps, the class's module registered only while pickling (pickle
    checks that it can find the class; the reader must never look)."""
    module_name = type(obj).__module__
    created = module_name not in sys.modules
    module = sys.modules.setdefault(module_name, types.ModuleType(module_name))
    module.Vocabulary = type(obj)
    try:
        return pickle.dumps(obj, protocol=protocol)
    finally:
        del module.Vocabulary
        if created:
            del sys.modules[module_name]


def _write(tmp_path, data, name="f30k_precomp_vocab.pkl"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _py2_pickle(words=WORDS):
    """The bytes Python 2's `pickle.dump(vocab, f, pickle.HIGHEST_PROTOCOL)`
    writes: protocol 2, the special tokens (str literals of build_vocab) and
    "café" as byte strings, the other words (nltk's tokens) as unicode."""

    def text(value, as_bytes):
        data = value.encode("utf-8")
        if as_bytes:  # SHORT_BINSTRING
            return b"U" + bytes([len(data)]) + data
        return b"X" + len(data).to_bytes(4, "little") + data  # BINUNICODE

    def word(w):
        return text(w, w.startswith("<") or w == "café")

    def integer(n):
        return b"K" + bytes([n])  # BININT1

    def dict_of(pairs):
        return b"}(" + b"".join(k + v for k, v in pairs) + b"u"  # EMPTY_DICT MARK ... SETITEMS

    state = dict_of(
        [
            (text("word2idx", True), dict_of([(word(w), integer(i)) for i, w in enumerate(words)])),
            (text("idx2word", True), dict_of([(integer(i), word(w)) for i, w in enumerate(words)])),
            (text("idx", True), integer(len(words))),
        ]
    )
    # PROTO 2, GLOBAL vocab.Vocabulary, EMPTY_TUPLE, NEWOBJ, state, BUILD, STOP
    return b"\x80\x02cvocab\nVocabulary\n)\x81" + state + b"b."


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("module", ["vocab", "__main__"])
def test_pickles_load_with_the_reference_ids(tmp_path, protocol, module):
    path = _write(tmp_path, _dumps(_reference_vocab(module=module), protocol))
    vocabulary = load_reference_vocabulary(path)
    assert vocabulary.words == WORDS
    assert vocabulary.tokenizer == "nltk"
    assert vocabulary.encode("A dog runs") == [1, 4, 5, 7, 2]
    assert "vocab" not in sys.modules  # the reference's module was never imported


def test_a_python2_pickle_with_byte_strings_loads(tmp_path):
    path = _write(tmp_path, _py2_pickle())
    vocabulary = load_reference_vocabulary(path)
    assert vocabulary.words == WORDS
    assert vocabulary.word2idx["café"] == 6


def test_the_reference_json_loads_as_nltk(tmp_path):
    vocab = _reference_vocab()
    data = {"word2idx": vocab.word2idx, "idx2word": vocab.idx2word, "idx": vocab.idx}
    path = tmp_path / "f30k_precomp_vocab.json"
    path.write_text(json.dumps(data), encoding="utf-8")  # idx2word's keys become "0", ...
    vocabulary = load_reference_vocabulary(path)
    assert vocabulary == Vocabulary(WORDS, tokenizer="nltk")
    assert load_reference_vocabulary(path, tokenizer="regex").tokenizer == "regex"
    # A file that names its tokenizer keeps it.
    path.write_text(json.dumps({**data, "tokenizer": "regex"}), encoding="utf-8")
    assert load_reference_vocabulary(path).tokenizer == "regex"


def test_other_names_are_sniffed(tmp_path):
    pickled = _write(tmp_path, _dumps(_reference_vocab(), 4), name="vocab.bin")
    assert load_reference_vocabulary(pickled).words == WORDS
    as_json = tmp_path / "vocab.txt"
    as_json.write_text(json.dumps({"idx2word": dict(enumerate(WORDS))}), encoding="utf-8")
    assert load_reference_vocabulary(as_json).words == WORDS


class _Evil:
    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


def _assert_refused(path, sentinel, name):
    message = rf"Refusing to load .*{path.name}: it names the global {name}"
    with pytest.raises(ValueError, match=message):
        load_reference_vocabulary(path)
    assert not sentinel.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_a_pickle_that_runs_code_is_refused_unrun(tmp_path, protocol):
    sentinel = tmp_path / "sentinel"
    path = _write(tmp_path, pickle.dumps(_Evil(sentinel), protocol=protocol))
    _assert_refused(path, sentinel, rf"{os.system.__module__}\.system")


def test_code_hidden_in_the_vocabulary_is_refused_unrun(tmp_path):
    sentinel = tmp_path / "sentinel"
    vocab = _reference_vocab()
    vocab.idx = _Evil(sentinel)
    path = _write(tmp_path, _dumps(vocab, 2))
    _assert_refused(path, sentinel, rf"{os.system.__module__}\.system")


def test_a_hand_written_eval_pickle_is_refused(tmp_path):
    sentinel = tmp_path / "sentinel"
    code = f"__import__('os').system('touch {sentinel}')".encode()
    path = _write(tmp_path, b"c__builtin__\neval\n(S'" + code + b"'\ntR.")
    _assert_refused(path, sentinel, r"__builtin__\.eval")


@pytest.mark.parametrize(
    "words, message",
    [
        (["<start>", "<pad>", "<end>", "<unk>", "a"], r"ids 0 to 3 must be .*'<pad>', '<start>'"),
        (["a", "b"], r"ids 0 to 3 must be"),
        (["<pad>", "<start>", "<end>", "<unk>", "a", "a"], None),  # add_word keeps one
    ],
)
def test_the_special_tokens_must_come_first(tmp_path, words, message):
    path = _write(tmp_path, _dumps(_reference_vocab(words), 4))
    if message is None:
        assert len(load_reference_vocabulary(path)) == 5
        return
    with pytest.raises(ValueError, match=rf"{path.name}: {message}"):
        load_reference_vocabulary(path)


def _changed(change):
    vocab = _reference_vocab()
    change(vocab)
    return _dumps(vocab, 4)


@pytest.mark.parametrize(
    "data, message",
    [
        (_changed(lambda v: setattr(v, "idx", 99)), r"'idx' must be the number of words, 8"),
        (_changed(lambda v: v.idx2word.update({4: "cat"})),
         r"disagree: id 4 is 'a' in 'word2idx' but 'cat'"),
        (_changed(lambda v: v.word2idx.update({"cat": 12})), r"'word2idx' ids must be 0 to 8"),
        (_changed(lambda v: setattr(v, "word2idx", [1])), r"'word2idx' must be a dict"),
        (_changed(lambda v: (delattr(v, "word2idx"), delattr(v, "idx2word"))),
         r"neither 'word2idx' nor 'idx2word'"),
        (pickle.dumps([1, 2], protocol=2), r"holds a list, not the reference's"),
        (_dumps(_reference_vocab(), 4)[:-20], r"is not a readable vocabulary pickle"),
        (b"not a pickle at all", r"is not a readable vocabulary pickle"),
    ],
)
def test_bad_pickles_are_named(tmp_path, data, message):
    path = _write(tmp_path, data)
    with pytest.raises(ValueError, match=rf"{path.name}.*{message}"):
        load_reference_vocabulary(path)


def test_a_python2_byte_string_that_is_not_utf8_is_named(tmp_path):
    # "café" written in latin-1 by Python 2: one byte for the "é".
    data = _py2_pickle()
    assert data.count(b"U\x05caf\xc3\xa9") == 2
    path = _write(tmp_path, data.replace(b"U\x05caf\xc3\xa9", b"U\x04caf\xe9"))
    with pytest.raises(ValueError, match=r"the word of id 6 in 'word2idx' is not UTF-8"):
        load_reference_vocabulary(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pkl"):
        load_reference_vocabulary(tmp_path / "nowhere.pkl")
