"""The tokenizer a vocabulary names: nltk's word tokenizer (the reference
code's), or the package's regular expression; recorded in vocab.json and
in every model, so a model reads captions as it was trained to."""

import json
import re
import sys

import keras
import numpy as np
import pytest

from helpers import load_benchmark_script
from scan_keras.data import Vocabulary, get_tokenizer, make_world
from scan_keras.models import SCAN

# Independent of the Keras backend (see conftest.py).
pytestmark = pytest.mark.once

nltk = pytest.importorskip("nltk")

ROOT = __import__("os").path.dirname(__import__("os").path.dirname(__file__))


@pytest.fixture(scope="module")
def corpus():
    bench = load_benchmark_script("tokenizer_agreement")
    pairs = bench.caption_corpus()
    assert len(pairs) >= 2000
    return bench, pairs


def test_nltk_is_nltks_word_tokenizer(corpus):
    _, pairs = corpus
    split = get_tokenizer("nltk")
    for _, caption in pairs:
        expected = nltk.word_tokenize(caption.lower(), preserve_line=True)
        assert split(caption) == expected


def test_the_regex_tokenizer_against_nltk(corpus):
    bench, pairs = corpus
    table = bench.agreement(pairs, get_tokenizer("regex"), get_tokenizer("nltk"))
    share = {kind: same / count for kind, (count, same, _) in table.items()}
    for kind in ("plain", "final period", "comma", "single quotes", "contractions",
                 "possessive", "hyphens", "non-ascii", "stray spacing and case"):
        assert share[kind] == 1.0, kind
    # Known differences: nltk rewrites double quotes as `` and '', keeps
    # "..." whole, keeps 3:30 and and/or whole; and without its sentence
    # splitter it leaves the period on "snow." in "snow. it is sunny."
    for kind in ("quotes", "ellipsis", "several sentences"):
        assert share[kind] == 0.0, kind
    # The overall figure docs/reproducing.md states.
    total = sum(c for c, _, _ in table.values())
    same = sum(s for _, s, _ in table.values())
    text = open(f"{ROOT}/docs/reproducing.md", encoding="utf-8").read()
    stated = re.search(r"splits ([\d.]+)% of (\d[\d,]*) varied captions", text)
    assert stated, "docs/reproducing.md states the agreement"
    assert stated.group(1) == f"{100 * same / total:.1f}"
    assert int(stated.group(2).replace(",", "")) == total


def test_the_worlds_captions_split_the_same_either_way():
    world = make_world({"train": 40, "dev": 5, "test": 5}, seed=3)
    regex, words = get_tokenizer("regex"), get_tokenizer("nltk")
    for split in world.values():
        for caption in split.captions:
            assert regex(caption) == words(caption)


def test_the_tokenizer_is_saved_and_loaded(tmp_path):
    vocabulary = Vocabulary.build(["a dog ... runs", "a dog ... sleeps"], min_count=2,
                                  tokenizer="nltk")
    assert "..." in vocabulary
    path = tmp_path / "vocab.json"
    vocabulary.save(path)
    assert json.loads(path.read_text())["tokenizer"] == "nltk"
    loaded = Vocabulary.load(path)
    assert loaded == vocabulary and loaded.tokenizer == "nltk"
    assert loaded.encode("a dog ...") == vocabulary.encode("a dog ...")
    # The file's own choice wins over the fallback for files naming none.
    assert Vocabulary.load(path, tokenizer="regex").tokenizer == "nltk"
    assert vocabulary != Vocabulary(vocabulary.words, tokenizer="regex")


def test_older_files_and_models_read_as_regex(tmp_path):
    path = tmp_path / "old.json"
    words = ["<pad>", "<start>", "<end>", "<unk>", "a", "dog", "."]
    path.write_text(json.dumps({"word2idx": {w: i for i, w in enumerate(words)}}))
    assert Vocabulary.load(path).tokenizer == "regex"
    assert Vocabulary.load(path, tokenizer="nltk").tokenizer == "nltk"
    # A model saved before the choice existed held a plain word list.
    config = SCAN(vocabulary=Vocabulary(words), img_dim=4, embed_size=8, word_dim=4).get_config()
    config["vocabulary"] = words
    assert SCAN.from_config(config).vocabulary.tokenizer == "regex"


def test_models_keep_the_tokenizer(tmp_path):
    vocabulary = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", "``"], tokenizer="nltk")
    model = SCAN(vocabulary=vocabulary, img_dim=4, embed_size=8, word_dim=4)
    model.build()
    path = str(tmp_path / "m.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.vocabulary.tokenizer == "nltk"
    assert restored.vocabulary.encode('a "a') == [1, 4, 5, 4, 2]


def test_bad_tokenizers(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="tokenizer.*Received: tokenizer='spacy'"):
        Vocabulary(["<pad>", "<start>", "<end>", "<unk>"], tokenizer="spacy")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"idx2word": {"0": "<pad>", "1": "<start>", "2": "<end>",
                                            "3": "<unk>"}, "tokenizer": "spacy"}))
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}.*spacy"):
        Vocabulary.load(path)
    # nltk missing: the vocabulary loads, and its first caption says what to install.
    vocabulary = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a"], tokenizer="nltk")
    monkeypatch.setitem(sys.modules, "nltk", None)
    with pytest.raises(ImportError, match="pip install nltk"):
        vocabulary.encode("a")
    with pytest.raises(ImportError, match="pip install nltk"):
        Vocabulary.build(["a a a a"], tokenizer="nltk")
    assert Vocabulary.build(["a a a a"]).tokenizer == "regex"


def test_nltk_punkt_needs_its_data(monkeypatch):
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:
        with pytest.raises(ImportError, match="nltk.downloader punkt_tab"):
            get_tokenizer("nltk_punkt")
    else:
        split = get_tokenizer("nltk_punkt")
        assert split("A dog. A cat.") == ["a", "dog", ".", "a", "cat", "."]
    assert np.all([get_tokenizer("regex")("A dog. A cat.")[2] == "."])


def test_convert_reads_the_authors_vocabulary_as_nltk(tmp_path):
    pytest.importorskip("torch")
    import test_convert

    words = ["<pad>", "<start>", "<end>", "<unk>"] + [f"w{i}" for i in range(4, 30)]
    path = tmp_path / "f30k_precomp_vocab.json"
    path.write_text(json.dumps({"word2idx": {w: i for i, w in enumerate(words)},
                                "idx2word": {str(i): w for i, w in enumerate(words)},
                                "idx": len(words)}))
    opt = test_convert.make_options()
    checkpoint = test_convert.save_checkpoint(
        tmp_path / "m.pth.tar", test_convert.make_encoders(opt), opt
    )
    from scan_keras.convert import load_official_checkpoint

    assert load_official_checkpoint(checkpoint, str(path)).vocabulary.tokenizer == "nltk"
    model = load_official_checkpoint(checkpoint, str(path), tokenizer="regex")
    assert model.vocabulary.tokenizer == "regex"
