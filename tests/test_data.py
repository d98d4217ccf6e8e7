"""scan_keras.data: tokeniser, vocabulary, precomputed splits, batches, toy data."""

import collections
import json
import os
import pickle

import keras
import numpy as np
import pytest

from scan_keras.data import (
    SPLITS,
    PairBatches,
    PrecompSplit,
    Vocabulary,
    load_split,
    tokenize,
    write_split,
    write_toy_precomp,
)
from scan_keras.data.toy import TOY_WORDS, _toy_prototypes
from scan_keras.data.vocabulary import SPECIAL_TOKENS, _words_from_json

SPECIALS = list(SPECIAL_TOKENS)


def make_split(tmp_path, rng, n_images=6, n_regions=4, img_dim=5, split="train"):
    """Writes a split of random features with distinct captions; returns both."""
    features = rng.normal(size=(n_images, n_regions, img_dim)).astype("float32")
    words = ["dog", "cat", "ball", "tree", "red", "big"]
    captions = [
        f"A {words[c % 6]} {'and ' * (c % 3)}{words[(c // 6) % 6]} number {c}."
        for c in range(5 * n_images)
    ]
    write_split(tmp_path, split, features, captions)
    return features, captions


def captions_file(tmp_path, text, split="train", n_images=2):
    write_split(tmp_path, split, np.zeros((n_images, 3, 4), "float32"),
                ["x"] * (5 * n_images))
    path = tmp_path / f"{split}_caps.txt"
    path.write_bytes(text.encode("utf-8"))
    return path


# --- tokenize --------------------------------------------------------------


@pytest.mark.parametrize(
    "caption, tokens",
    [
        ("A Dog runs.", ["a", "dog", "runs", "."]),
        ("Two dogs, one cat!", ["two", "dogs", ",", "one", "cat", "!"]),
        (
            "3 men and 2.5 kids; 1,000 birds",
            ["3", "men", "and", "2.5", "kids", ";", "1,000", "birds"],
        ),
        ("The man's hat isn't red", ["the", "man", "'s", "hat", "is", "n't", "red"]),
        ("They're here, we'll go", ["they", "'re", "here", ",", "we", "'ll", "go"]),
        ("A t-shirt at 5 o'clock", ["a", "t-shirt", "at", "5", "o'clock"]),
        ("Wait... (really?)", ["wait", ".", ".", ".", "(", "really", "?", ")"]),
        ('A "quoted" sign', ["a", '"', "quoted", '"', "sign"]),
        ("the 2nd CAFÉ", ["the", "2nd", "café"]),
        ("  spaced\tout \n", ["spaced", "out"]),
        ("   ", []),
    ],
)
def test_tokenize(caption, tokens):
    assert tokenize(caption) == tokens


def test_tokenize_rejects_non_strings():
    with pytest.raises(ValueError, match="caption"):
        tokenize(["a", "dog"])


# --- Vocabulary ------------------------------------------------------------


def test_build_min_count_and_order():
    # "dog" 5x, "cat" 4x, "ball" 3x, "a" 4x, "tree" 1x.
    captions = ["a dog", "a dog cat", "a dog cat ball", "a dog cat ball",
                "dog cat ball", "tree"]
    vocabulary = Vocabulary.build(captions, min_count=4)
    # Descending count, then alphabetical: dog (5), then a and cat (4).
    assert vocabulary.words == SPECIALS + ["dog", "a", "cat"]
    assert "ball" not in vocabulary
    vocabulary = Vocabulary.build(captions, min_count=3)
    assert vocabulary.words == SPECIALS + ["dog", "a", "cat", "ball"]
    assert Vocabulary.build(captions, min_count=1).words[-1] == "tree"
    assert Vocabulary.build(captions, min_count=4) == Vocabulary.build(
        captions[::-1], min_count=4
    )


def test_build_counts_tokens_not_raw_words():
    vocabulary = Vocabulary.build(["Dog.", "dog!", "DOG", "dog ."], min_count=4)
    assert vocabulary.words == SPECIALS + ["dog"]


def test_special_ids_and_container_protocol():
    vocabulary = Vocabulary(SPECIALS + ["dog", "cat"])
    assert [vocabulary.word2idx[w] for w in SPECIALS] == [0, 1, 2, 3]
    assert vocabulary.word2idx["cat"] == 5
    assert len(vocabulary) == 6
    assert "dog" in vocabulary and "cow" not in vocabulary
    assert vocabulary == Vocabulary(SPECIALS + ["dog", "cat"])
    assert vocabulary != Vocabulary(SPECIALS + ["cat", "dog"])
    assert vocabulary != SPECIALS + ["dog", "cat"]
    # The accessors return copies: the vocabulary cannot be changed.
    vocabulary.words.append("cow")
    vocabulary.word2idx["cow"] = 6
    assert len(vocabulary) == 6 and "cow" not in vocabulary
    assert "6 words" in repr(vocabulary)


def test_encode_decode():
    vocabulary = Vocabulary(SPECIALS + ["a", "dog", "runs", "."])
    assert vocabulary.encode("A dog runs.") == [1, 4, 5, 6, 7, 2]
    assert vocabulary.encode("a cat runs") == [1, 4, 3, 6, 2]  # cat: <unk>
    assert vocabulary.decode([1, 4, 5, 6, 7, 2, 0, 0]) == "a dog runs ."
    assert vocabulary.decode(np.array([1, 4, 3, 2])) == "a <unk>"
    for caption in ["a dog runs .", "dog a dog"]:
        assert vocabulary.decode(vocabulary.encode(caption)) == caption
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        vocabulary.decode([1, 8, 2])
    with pytest.raises(ValueError, match="1-D"):
        vocabulary.decode([[1, 2]])


def test_encode_rejects_empty_caption():
    vocabulary = Vocabulary(SPECIALS + ["dog"])
    for caption in ["", "   \t"]:
        with pytest.raises(ValueError, match="at least one word"):
            vocabulary.encode(caption)
    with pytest.raises(ValueError, match=r"captions\[1\]"):
        vocabulary.encode_batch(["dog", " "])


def test_encode_batch_pads():
    vocabulary = Vocabulary(SPECIALS + ["a", "dog"])
    ids = vocabulary.encode_batch(["a dog", "dog", "a a a dog"])
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(
        ids, [[1, 4, 5, 2, 0, 0], [1, 5, 2, 0, 0, 0], [1, 4, 4, 4, 5, 2]]
    )
    padded = vocabulary.encode_batch(["a dog", "dog", "a a a dog"], pad_to_multiple=4)
    assert padded.shape == (3, 8)
    np.testing.assert_array_equal(padded[:, :6], ids)
    assert not padded[:, 6:].any()
    assert vocabulary.encode_batch(["dog"], pad_to_multiple=3).shape == (1, 3)
    with pytest.raises(ValueError, match="pad_to_multiple"):
        vocabulary.encode_batch(["dog"], pad_to_multiple=0)
    with pytest.raises(ValueError, match="at least one caption"):
        vocabulary.encode_batch([])
    with pytest.raises(ValueError, match="single string"):
        vocabulary.encode_batch("a dog")


@pytest.mark.parametrize(
    "words, match",
    [
        (["<pad>", "<start>", "<end>"], "special tokens"),
        (["<start>", "<pad>", "<end>", "<unk>", "dog"], "special tokens"),
        (SPECIALS + ["dog", "cat", "dog"], "'dog' at ids 4 and 6"),
        (SPECIALS + ["dog", 7], r"words\[5\]"),
        ("<pad>", "single string"),
    ],
)
def test_vocabulary_rejects_bad_words(words, match):
    with pytest.raises(ValueError, match=match):
        Vocabulary(words)


def test_save_load_round_trip(tmp_path):
    vocabulary = Vocabulary(SPECIALS + ["dog", "café", "t-shirt"])
    path = tmp_path / "vocab.json"
    vocabulary.save(path)
    data = json.loads(path.read_text())
    assert data == {
        "word2idx": {w: i for i, w in enumerate(vocabulary.words)},
        "idx2word": {str(i): w for i, w in enumerate(vocabulary.words)},
        "idx": 7,
        "tokenizer": "regex",
    }
    assert Vocabulary.load(path) == vocabulary
    assert Vocabulary.load(str(path)).words == vocabulary.words


def released_format(words):
    # As the reference code's serialize_vocab wrote it: ids as JSON keys
    # become strings, and idx is the next free id.
    return {
        "word2idx": {w: i for i, w in enumerate(words)},
        "idx2word": {str(i): w for i, w in enumerate(words)},
        "idx": len(words),
    }


def write_json(tmp_path, data):
    path = tmp_path / "vocab.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_load_released_format_variants(tmp_path):
    words = SPECIALS + ["a", "man", "riding"]
    expected = Vocabulary(words)
    data = released_format(words)
    # Shuffled key order in the file does not matter.
    data["idx2word"] = dict(reversed(list(data["idx2word"].items())))
    assert Vocabulary.load(write_json(tmp_path, data)) == expected
    only_word2idx = {"word2idx": data["word2idx"]}
    assert Vocabulary.load(write_json(tmp_path, only_word2idx)) == expected
    only_idx2word = {"idx2word": data["idx2word"], "idx": 7}
    assert Vocabulary.load(write_json(tmp_path, only_idx2word)) == expected
    # Integer keys: JSON cannot write them, but a parsed dict may hold them.
    int_keys = {"idx2word": {i: w for i, w in enumerate(words)}}
    assert _words_from_json(int_keys) == words


def bad_vocab_files():
    words = SPECIALS + ["a", "man"]
    good = released_format(words)

    def changed(**parts):
        return {**good, **parts}

    w2i, i2w = good["word2idx"], good["idx2word"]
    return [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "'word2idx' and/or 'idx2word'"),
        ({"words": words}, r"'word2idx' and/or 'idx2word'.*\['words'\]"),
        (
            changed(word2idx={**w2i, "man": 7}),
            r"ids must be 0 to 5.*out of range \[7\].*missing ids \[5\]",
        ),
        (changed(word2idx={**w2i, "man": 4}), "ids must be 0 to 5"),
        (changed(word2idx={**w2i, "man": "5"}), "must be integers"),
        (
            changed(idx2word={**i2w, "7": "woman"}),
            r"'idx2word' ids must be 0 to 6.*missing ids \[6\]",
        ),
        (changed(idx2word={**i2w, "x": "woman"}), "keys must be integer ids"),
        (
            changed(idx2word={**i2w, "5": "woman"}),
            "disagree: id 5 is 'man' in 'word2idx' but 'woman'",
        ),
        (
            {"word2idx": w2i, "idx2word": {"0": "<pad>"}},
            "disagree: 6 words in 'word2idx', 1 in 'idx2word'",
        ),
        (changed(idx=9), "'idx' must be the number of words, 6"),
        (
            released_format(["<pad>", "<unk>", "<start>", "<end>", "a"]),
            "special tokens",
        ),
        (released_format(["a", "man"]), "special tokens"),
        (changed(word2idx=["a"]), "'word2idx' must be an object"),
    ]


@pytest.mark.parametrize("data, match", bad_vocab_files())
def test_load_rejects_bad_files(tmp_path, data, match):
    path = write_json(tmp_path, data)
    with pytest.raises(ValueError, match=match) as info:
        Vocabulary.load(path)
    assert str(path) in str(info.value)


def test_load_missing_file(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        Vocabulary.load(path)


# --- load_split, write_split -------------------------------------------------


def test_load_split_round_trip(tmp_path, rng):
    features, captions = make_split(tmp_path, rng)
    split = load_split(tmp_path, "train")
    assert isinstance(split, PrecompSplit)
    assert isinstance(split.images, np.memmap)
    np.testing.assert_array_equal(split.images, features)
    assert split.captions == captions
    sizes = (split.n_images, split.n_captions, split.n_regions, split.img_dim)
    assert sizes == (6, 30, 4, 5)
    assert split.split == "train" and split.captions_per_image == 5
    assert split.path == str(tmp_path / "train_ims.npy")
    assert split.captions_path == str(tmp_path / "train_caps.txt")
    assert "n_images=6" in repr(split) and "'train'" in repr(split)
    np.testing.assert_array_equal(split.image_of_caption([0, 4, 5, 29]), [0, 0, 1, 5])
    np.testing.assert_array_equal(
        split.image_of_caption(np.arange(30).reshape(3, 10)),
        np.arange(30).reshape(3, 10) // 5,
    )


def test_image_features_values_and_order(tmp_path, rng):
    features, _ = make_split(tmp_path, rng)
    split = load_split(tmp_path, "train")
    indices = [4, 1, 4, 0]
    out = split.image_features(indices)
    assert out.dtype == np.float32 and not isinstance(out, np.memmap)
    np.testing.assert_array_equal(out, features[indices])
    assert split.image_features(np.array([[2, 3], [5, 0]])).shape == (2, 2, 4, 5)
    np.testing.assert_array_equal(split.image_features(3), features[3])
    assert split.image_features([]).shape == (0, 4, 5)
    for bad in ([6], [-1]):
        with pytest.raises(ValueError, match=r"\[0, 6\)"):
            split.image_features(bad)
    with pytest.raises(ValueError, match="integers"):
        split.image_features([0.5])
    with pytest.raises(ValueError, match=r"caption_indices.*\[0, 30\)"):
        split.image_of_caption([30])


def test_other_captions_per_image(tmp_path, rng):
    features = rng.normal(size=(3, 2, 4)).astype("float32")
    write_split(tmp_path, "dev", features, ["a", "b", "c"], captions_per_image=1)
    split = load_split(tmp_path, "dev", captions_per_image=1)
    np.testing.assert_array_equal(split.image_of_caption([0, 1, 2]), [0, 1, 2])
    # The same files read as 5 per image do not fit.
    with pytest.raises(ValueError, match="3 captions"):
        load_split(tmp_path, "dev")


def test_float64_and_float16_features_read_as_float32(tmp_path, rng):
    features = rng.normal(size=(2, 3, 4))
    make_split(tmp_path, rng, n_images=2)
    for dtype in ("float64", "float16"):
        np.save(tmp_path / "train_ims.npy", features.astype(dtype))
        out = load_split(tmp_path, "train").image_features([0, 1])
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, features.astype(dtype), rtol=1e-3)


def test_missing_paths(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_split(tmp_path / "nowhere", "train")
    make_split(tmp_path, rng)
    os.remove(tmp_path / "train_caps.txt")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "train_caps.txt")):
        load_split(tmp_path, "train")
    make_split(tmp_path, rng)
    os.remove(tmp_path / "train_ims.npy")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "train_ims.npy")):
        load_split(tmp_path, "train")


def test_unknown_split(tmp_path, rng):
    make_split(tmp_path, rng)
    with pytest.raises(ValueError, match=r"'train', 'dev', 'test', 'testall'.*'val'"):
        load_split(tmp_path, "val")
    with pytest.raises(ValueError, match="val"):
        write_split(tmp_path, "val", np.zeros((1, 1, 1)), ["a"] * 5)
    assert SPLITS == ("train", "dev", "test", "testall")


def test_truncated_npy(tmp_path, rng):
    make_split(tmp_path, rng)
    path = tmp_path / "train_ims.npy"
    data = path.read_bytes()
    for cut in (len(data) - 7, 200, 60, 5):  # data, header, magic
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated or not a .npy file") as info:
            load_split(tmp_path, "train")
        assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "content",
    [b"just some text\n", b"\x93NUMPY\x01\x00garbage!", b"PK\x03\x04zip", b""],
)
def test_not_npy(tmp_path, rng, content):
    make_split(tmp_path, rng)
    path = tmp_path / "train_ims.npy"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="truncated or not a .npy file") as info:
        load_split(tmp_path, "train")
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "array, match",
    [
        (np.zeros((6, 4, 5), "int32"), "float features.*int32"),
        (np.empty((6, 4, 5), object), "float features.*object"),
        (np.zeros((6, 5), "float32"), r"3-D array.*\(6, 5\)"),
        (np.zeros((6, 2, 4, 5), "float32"), "3-D array"),
        (np.zeros((0, 4, 5), "float32"), "at least one image"),
    ],
)
def test_bad_feature_arrays(tmp_path, rng, array, match):
    make_split(tmp_path, rng)
    path = tmp_path / "train_ims.npy"
    np.save(path, array, allow_pickle=True)
    with pytest.raises(ValueError, match=match) as info:
        load_split(tmp_path, "train")
    assert str(path) in str(info.value)


def test_caption_count_mismatch(tmp_path, rng):
    make_split(tmp_path, rng)
    path = tmp_path / "train_caps.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-2]) + "\n")
    with pytest.raises(ValueError, match=r"28 captions.*6 images.*5 x 6 = 30"):
        load_split(tmp_path, "train")


def test_blank_caption_line(tmp_path):
    text = "".join(f"caption {i}\n" for i in range(10))
    path = captions_file(tmp_path, text.replace("caption 6\n", "   \n"))
    with pytest.raises(ValueError, match="line 7 is an empty caption") as info:
        load_split(tmp_path, "train")
    assert str(path) in str(info.value)
    # A blank line at the end is a caption too many, not the final newline.
    captions_file(tmp_path, text + "\n")
    with pytest.raises(ValueError, match="line 11 is an empty caption"):
        load_split(tmp_path, "train")


def test_caption_file_endings(tmp_path):
    captions = [f"Caption {i}, café" for i in range(10)]
    # Final newline or not, Windows line ends, trailing blanks: same captions.
    for text in [
        "\n".join(captions) + "\n",
        "\n".join(captions),
        "\r\n".join(captions) + "\r\n",
        " \t\n".join(captions) + "  \n",
    ]:
        captions_file(tmp_path, text)
        assert load_split(tmp_path, "train").captions == captions
    # Only \n ends a caption: a form feed inside one does not split it.
    captions_file(tmp_path, "\n".join(["a\x0cb"] + captions[1:]))
    assert load_split(tmp_path, "train").captions[0] == "a\x0cb"
    path = captions_file(tmp_path, "")
    path.write_bytes(b"\xff\xfe bad\n" * 10)
    with pytest.raises(ValueError, match="UTF-8"):
        load_split(tmp_path, "train")


def test_non_finite_features(tmp_path, rng):
    features, captions = make_split(tmp_path, rng)
    features[3, 1, 2] = np.nan
    features[5, 0, 0] = np.inf
    write_split(tmp_path, "train", features, captions)
    split = load_split(tmp_path, "train")  # values are checked as read
    finite = [0, 1, 2, 4]
    np.testing.assert_array_equal(split.image_features(finite), features[finite])
    with pytest.raises(ValueError, match="non-finite features.*image 3") as info:
        split.image_features([1, 5, 3])
    assert split.path in str(info.value)
    with pytest.raises(ValueError, match="image 5"):
        split.image_features([5])
    for batch_size in (1, 2, 100):
        with pytest.raises(ValueError, match="non-finite features.*image 3"):
            split.check_finite(batch_size=batch_size)
    features[3, 1, 2] = 0.0
    features[5, 0, 0] = 0.0
    write_split(tmp_path, "train", features, captions)
    load_split(tmp_path, "train").check_finite(batch_size=4)


def test_check_finite_up_front_spares_the_reads(tmp_path, rng, monkeypatch):
    # Each image is checked once: after the whole split is scanned, reads
    # (a training epoch's batches) check nothing again.
    features, _ = make_split(tmp_path, rng)
    split = load_split(tmp_path, "train")
    checked = []
    original = split._check_finite
    monkeypatch.setattr(split, "_check_finite",
                        lambda f, i: (checked.extend(np.asarray(i).tolist()), original(f, i)))
    split.image_features([1, 4])
    assert sorted(checked) == [1, 4]
    split.check_finite(batch_size=4)
    assert sorted(checked) == sorted([1, 4] + list(range(6)))
    np.testing.assert_array_equal(split.image_features([5, 0, 5]), features[[5, 0, 5]])
    assert len(checked) == 8


def test_write_split_validates(tmp_path):
    features = np.zeros((2, 3, 4), "float32")
    captions = ["a caption"] * 10
    with pytest.raises(ValueError, match=r"5 x 2 = 10.*9 captions"):
        write_split(tmp_path, "test", features, captions[:9])
    with pytest.raises(ValueError, match=r"captions\[4\]"):
        write_split(tmp_path, "test", features, captions[:4] + ["  "] + captions[5:])
    with pytest.raises(ValueError, match="one line"):
        write_split(tmp_path, "test", features, captions[:9] + ["two\nlines"])
    with pytest.raises(ValueError, match="3-D"):
        write_split(tmp_path, "test", features[0], captions[:5])
    assert not os.path.exists(tmp_path / "test_ims.npy")
    ims, caps = write_split(
        tmp_path / "new" / "dir", "test", features.astype("float64"), captions
    )
    assert np.load(ims).dtype == np.float32
    assert open(caps, "rb").read() == b"a caption\n" * 10


def test_split_pickles_without_its_features(tmp_path, rng):
    features, _ = make_split(tmp_path, rng, n_images=50, img_dim=64)
    split = load_split(tmp_path, "train")
    data = pickle.dumps(split)
    assert len(data) < features.nbytes / 4
    restored = pickle.loads(data)
    assert isinstance(restored.images, np.memmap)
    np.testing.assert_array_equal(restored.image_features([7]), features[[7]])


def test_in_memory_split_checks(rng):
    images = rng.normal(size=(2, 3, 4)).astype("float32")
    split = PrecompSplit(images, ["a"] * 10, "test")
    assert split.n_images == 2 and split.path is None
    with pytest.raises(ValueError, match="9 captions"):
        PrecompSplit(images, ["a"] * 9, "test")
    with pytest.raises(ValueError, match="NumPy array"):
        PrecompSplit(images.tolist(), ["a"] * 10, "test")


# --- PairBatches -------------------------------------------------------------


@pytest.fixture
def pairs(tmp_path, rng):
    features, captions = make_split(tmp_path, rng, n_images=9)  # 45 captions
    split = load_split(tmp_path, "train")
    vocabulary = Vocabulary.build(captions, min_count=2)
    return split, vocabulary, features, captions


def expected_widths(batches, vocabulary, captions, multiple=1):
    """Each batch's longest caption, rounded up; batch 0 wider if it ties batch 1."""
    widths = []
    for i in range(len(batches)):
        rows = batches.batch_captions(i)
        longest = max(len(vocabulary.encode(captions[c])) for c in rows)
        widths.append(-(-longest // multiple) * multiple)
    if len(widths) > 1 and widths[0] == widths[1]:
        widths[0] += multiple
    return widths


def check_epoch(batches, features, captions, vocabulary):
    """Checks every batch's rows against the split; returns the caption order."""
    order = []
    multiple = batches.pad_to_multiple or 1
    widths = expected_widths(batches, vocabulary, captions, multiple)
    for i in range(len(batches)):
        batch = batches[i]
        assert isinstance(batch, dict) and set(batch) == {"features", "token_ids"}
        ids, feats = batch["token_ids"], batch["features"]
        assert ids.dtype == np.int32 and feats.dtype == np.float32
        assert ids.shape[1] == widths[i]
        rows = batches.batch_captions(i)
        for row, c in enumerate(rows):
            np.testing.assert_array_equal(feats[row], features[c // 5])
            encoded = vocabulary.encode(captions[c])
            np.testing.assert_array_equal(ids[row, : len(encoded)], encoded)
            assert not ids[row, len(encoded):].any()
        order.extend(int(c) for c in rows)
    return order


def test_pair_batches_cover_every_caption_once(pairs):
    split, vocabulary, features, captions = pairs
    batches = PairBatches(split, vocabulary, batch_size=8)
    assert len(batches) == 6  # 45 captions: 5 full batches and one of 5
    assert [len(batches[i]["token_ids"]) for i in range(6)] == [8] * 5 + [5]
    order = check_epoch(batches, features, captions, vocabulary)
    assert sorted(order) == list(range(45))
    assert order != list(range(45))
    # Decoded rows are the captions themselves, as a multiset.
    decoded = [
        vocabulary.decode(row)
        for i in range(len(batches))
        for row in batches[i]["token_ids"]
    ]
    assert collections.Counter(decoded) == collections.Counter(
        vocabulary.decode(vocabulary.encode(c)) for c in captions
    )


def test_pair_batches_without_shuffle(pairs):
    split, vocabulary, features, captions = pairs
    batches = PairBatches(split, vocabulary, batch_size=10, shuffle=False)
    assert check_epoch(batches, features, captions, vocabulary) == list(range(45))
    batches.on_epoch_end()
    assert check_epoch(batches, features, captions, vocabulary) == list(range(45))


def test_pair_batches_epoch_order(pairs):
    split, vocabulary, features, captions = pairs
    batches = PairBatches(split, vocabulary, batch_size=8, seed=3)
    assert batches.epoch == 0
    epoch0 = check_epoch(batches, features, captions, vocabulary)
    batches.on_epoch_end()
    assert batches.epoch == 1
    epoch1 = check_epoch(batches, features, captions, vocabulary)
    assert sorted(epoch1) == list(range(45)) and epoch1 != epoch0
    np.testing.assert_array_equal(
        epoch1, np.random.default_rng([3, 1]).permutation(45)
    )
    # Rebuilt with the same seed: the same order for the same epoch.
    again = PairBatches(split, vocabulary, batch_size=8, seed=3)
    assert check_epoch(again, features, captions, vocabulary) == epoch0
    again.set_epoch(1)
    assert again.epoch == 1
    np.testing.assert_array_equal(again[2]["token_ids"], batches[2]["token_ids"])
    np.testing.assert_array_equal(again[2]["features"], batches[2]["features"])
    other_seed = PairBatches(split, vocabulary, batch_size=8, seed=4)
    assert check_epoch(other_seed, features, captions, vocabulary) != epoch0
    with pytest.raises(ValueError, match="epoch"):
        batches.set_epoch(-1)


def test_pair_batches_pad_to_multiple_and_drop_remainder(pairs):
    split, vocabulary, features, captions = pairs
    plain = PairBatches(split, vocabulary, batch_size=8, seed=1)
    padded = PairBatches(split, vocabulary, batch_size=8, seed=1, pad_to_multiple=4)
    assert check_epoch(padded, features, captions, vocabulary) == check_epoch(
        plain, features, captions, vocabulary
    )
    for i in range(len(plain)):
        ids, wide = plain[i]["token_ids"], padded[i]["token_ids"]
        assert wide.shape[1] % 4 == 0 and wide.shape[1] >= ids.shape[1]
        np.testing.assert_array_equal(wide[:, : ids.shape[1]], ids)
        assert not wide[:, ids.shape[1]:].any()
    dropped = PairBatches(split, vocabulary, batch_size=8, seed=1, drop_remainder=True)
    assert len(dropped) == 5
    assert all(len(dropped[i]["features"]) == 8 for i in range(5))
    with pytest.raises(IndexError):
        dropped[5]
    assert len(PairBatches(split, vocabulary, batch_size=45, drop_remainder=True)) == 1
    assert len(PairBatches(split, vocabulary, batch_size=44, drop_remainder=False)) == 2
    with pytest.raises(ValueError, match="no full batch"):
        PairBatches(split, vocabulary, batch_size=46, drop_remainder=True)


def test_pair_batches_are_inputs_only(pairs):
    split, vocabulary, _, _ = pairs
    batches = PairBatches(split, vocabulary, batch_size=8)
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batches[0])
    assert set(x) == {"features", "token_ids"} and y is None and sample_weight is None


def test_pair_batches_catch_nan(tmp_path, rng):
    features, captions = make_split(tmp_path, rng)
    features[2, 0, 0] = np.nan
    write_split(tmp_path, "train", features, captions)
    split = load_split(tmp_path, "train")
    vocabulary = Vocabulary.build(captions, min_count=1)
    batches = PairBatches(split, vocabulary, batch_size=30, shuffle=False)
    with pytest.raises(ValueError, match="non-finite features.*image 2"):
        batches[0]


def test_pair_batches_validate(pairs):
    split, vocabulary, _, _ = pairs
    for kwargs, match in [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.0}, "batch_size"),
        ({"pad_to_multiple": -1}, "pad_to_multiple"),
        ({"seed": -1}, "seed"),
    ]:
        with pytest.raises(ValueError, match=match):
            PairBatches(split, vocabulary, **kwargs)
    with pytest.raises(ValueError, match="Vocabulary"):
        PairBatches(split, vocabulary.words)
    with pytest.raises(ValueError, match="PrecompSplit"):
        PairBatches(split.images, vocabulary)
    with pytest.raises(ValueError, match="workers"):
        PairBatches(split, vocabulary, workers=-1)
    with pytest.raises(TypeError):
        PairBatches(split, vocabulary, worker=2)


def test_pair_batches_read_ahead_gives_the_epochs_own_batches(pairs):
    split, vocabulary, _, _ = pairs
    plain = PairBatches(split, vocabulary, batch_size=16, seed=4)
    ahead = PairBatches(split, vocabulary, batch_size=16, seed=4, workers=2)
    # Batches read ahead in epoch 0's order must not leak into epoch 1,
    # as they would with Keras' enqueuer.
    ahead[0], ahead[1]
    for epoch in (1, 2):
        plain.set_epoch(epoch)
        ahead.set_epoch(epoch)
        for index in range(len(plain)):
            want, got = plain[index], ahead[index]
            for key in ("features", "token_ids"):
                np.testing.assert_array_equal(got[key], want[key])


def test_pair_batches_name_the_empty_caption(pairs):
    split, vocabulary, _, _ = pairs
    split.captions[12] = " "
    match = r"train_caps.txt, line 13: .*at least one word"
    with pytest.raises(ValueError, match=match):
        PairBatches(split, vocabulary)


class PooledModel(keras.Model):
    """A small model that takes PairBatches' dicts and needs no targets."""

    def __init__(self, vocab_size):
        super().__init__()
        self.embedding = keras.layers.Embedding(vocab_size, 4, mask_zero=True)
        self.dense = keras.layers.Dense(4)

    def call(self, inputs):
        words = keras.ops.mean(self.embedding(inputs["token_ids"]), axis=1)
        regions = keras.ops.mean(self.dense(inputs["features"]), axis=1)
        return keras.ops.sum(words * regions, axis=-1)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        assert y is None  # the batches are inputs only, as SCAN's are
        return keras.ops.mean(y_pred**2)


def test_pair_batches_in_fit_follow_the_epoch(pairs):
    split, vocabulary, _, _ = pairs

    class Recorded(PairBatches):
        seen = []

        def __getitem__(self, index):
            self.seen.append((self.epoch, self.batch_captions(index).tolist()))
            return super().__getitem__(index)

    class SetEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            batches.set_epoch(epoch)

    batches = Recorded(split, vocabulary, batch_size=16, seed=5)
    model = PooledModel(len(vocabulary))
    model.compile(optimizer="sgd")
    history = model.fit(
        batches, epochs=2, shuffle=False, verbose=0, callbacks=[SetEpoch()]
    )
    assert np.all(np.isfinite(history.history["loss"]))
    # Each epoch went through its own permutation of all 45 captions (Keras
    # may read a batch or two more before training, to learn the shapes).
    for epoch in (0, 1):
        read = [rows for e, rows in batches.seen if e == epoch][-len(batches):]
        np.testing.assert_array_equal(
            np.concatenate(read), np.random.default_rng([5, epoch]).permutation(45)
        )


def test_first_two_batches_never_share_a_width(tmp_path, rng):
    # Batches 0 and 1 hold 4-token captions, batch 2 longer ones. Were
    # batches 0 and 1 of one width, Keras on TensorFlow would fix the token
    # axis to it and fail on batch 2.
    captions = ["a dog"] * 20 + ["a dog and a cat with a ball"] * 10
    write_split(tmp_path, "train", rng.normal(size=(6, 3, 4)), captions)
    vocabulary = Vocabulary.build(captions, min_count=1)
    split = load_split(tmp_path, "train")
    for multiple, widths in [(None, [5, 4, 10]), (4, [8, 4, 12])]:
        batches = PairBatches(
            split, vocabulary, batch_size=10, shuffle=False, pad_to_multiple=multiple
        )
        assert [batches[i]["token_ids"].shape[1] for i in range(3)] == widths
    model = PooledModel(len(vocabulary))
    model.compile(optimizer="sgd")
    history = model.fit(batches, epochs=2, shuffle=False, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    one_batch = PairBatches(split, vocabulary, batch_size=30, shuffle=False)
    assert one_batch[0]["token_ids"].shape == (30, 10)


# --- write_toy_precomp -------------------------------------------------------


def test_toy_precomp_layout(tmp_path):
    vocabulary = write_toy_precomp(tmp_path, seed=0)
    assert sorted(os.listdir(tmp_path)) == sorted(
        [f"{s}_{k}" for s in ("train", "dev", "test") for k in ("ims.npy", "caps.txt")]
        + ["vocab.json"]
    )
    assert Vocabulary.load(tmp_path / "vocab.json") == vocabulary
    for split, n in {"train": 200, "dev": 40, "test": 40}.items():
        data = load_split(tmp_path, split)
        assert data.images.shape == (n, 6, 32) and data.images.dtype == np.float32
        assert data.n_captions == 5 * n
        data.check_finite()
    # Every noun and filler word is known; the rare words are not.
    words = set(vocabulary.words)
    assert set(TOY_WORDS[:24]) <= words and {"a", "and", "with", ",", "."} <= words
    captions = load_split(tmp_path, "train").captions
    unknown = [t for c in captions for t in tokenize(c) if t not in words]
    assert 40 < len(unknown) < 200 and len(set(unknown)) == len(unknown)
    assert any(c != c.lower() for c in captions)


def test_toy_precomp_is_deterministic(tmp_path):
    def contents(path):
        return {name: (path / name).read_bytes() for name in sorted(os.listdir(path))}

    write_toy_precomp(tmp_path / "a", seed=7)
    write_toy_precomp(tmp_path / "b", seed=7)
    write_toy_precomp(tmp_path / "c", seed=8)
    assert contents(tmp_path / "a") == contents(tmp_path / "b")
    seed7, seed8 = contents(tmp_path / "a"), contents(tmp_path / "c")
    assert all(seed8[name] != seed7[name] for name in seed7 if name != "vocab.json")
    # The dict's key order does not change the bytes of a split.
    reordered = {"test": 40, "dev": 40, "train": 200}
    write_toy_precomp(tmp_path / "d", n_images=reordered, seed=7)
    assert contents(tmp_path / "d") == contents(tmp_path / "a")


def test_toy_precomp_is_learnable(tmp_path):
    n_concepts, img_dim = 12, 16
    vocabulary = write_toy_precomp(
        tmp_path, n_images={"train": 60}, n_regions=4, img_dim=img_dim,
        n_concepts=n_concepts, seed=2,
    )
    split = load_split(tmp_path, "train")
    prototypes = _toy_prototypes(n_concepts, img_dim, seed=2)
    features = split.image_features(np.arange(split.n_images))
    distances = np.linalg.norm(features[:, :, None] - prototypes[None, None], axis=-1)
    concepts = distances.argmin(axis=-1)  # (images, regions)
    # Each region is nearer one prototype, by a margin, than any other, and
    # the nearest prototypes are distinct within an image.
    assert all(len(set(row)) == 4 for row in concepts)
    nearest, second = np.sort(distances, axis=-1)[..., :2].T
    assert np.mean(nearest / second) < 0.6
    # Each caption names 2 to 4 concepts of its own image, and nothing else.
    nouns = {word: k for k, word in enumerate(TOY_WORDS[:n_concepts])}
    for c, caption in enumerate(split.captions):
        named = [nouns[t] for t in tokenize(caption) if t in nouns]
        assert 2 <= len(named) <= 4 and len(set(named)) == len(named)
        assert set(named) <= set(concepts[c // 5]), caption
    assert set(TOY_WORDS[:n_concepts]) <= set(vocabulary.words)


def test_toy_precomp_validates(tmp_path):
    for kwargs, match in [
        ({"n_images": {"val": 3}}, "val"),
        ({"n_images": {"train": 0}}, "positive image counts"),
        ({"n_concepts": 41}, "n_concepts"),
        ({"n_regions": 25}, "n_regions"),
        ({"n_regions": 1}, "n_regions"),
        ({"img_dim": 0}, "img_dim"),
    ]:
        with pytest.raises(ValueError, match=match):
            write_toy_precomp(tmp_path, **kwargs)
