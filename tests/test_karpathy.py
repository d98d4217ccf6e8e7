"""import_captions: Karpathy split files to the precomputed layout's captions."""

import json
import os
import warnings

import numpy as np
import pytest

from scan_keras.data import (
    KARPATHY_DATASETS,
    KARPATHY_SPLIT_SIZES,
    import_captions,
    karpathy,
    load_split,
)

# Independent of the Keras backend (see conftest.py).
pytestmark = pytest.mark.once


def _image(index, split, image_id=None, n=5, coco=False, raws=None):
    """One image entry as Karpathy's files have it; captions name the image."""
    raws = raws or [f"Image {index} caption {j}." for j in range(n)]
    entry = {
        "filename": f"{index}.jpg",
        "imgid": index,
        "split": split,
        "sentences": [
            {"raw": raw, "tokens": raw.lower().split(), "sentid": 10 * index + j}
            for j, raw in enumerate(raws)
        ],
    }
    if coco:
        entry["cocoid"] = image_id if image_id is not None else 1000 + index
        entry["filepath"] = "val2014" if split != "train" else "train2014"
        entry["filename"] = f"COCO_{entry['filepath']}_{entry['cocoid']:012d}.jpg"
    return entry


# Karpathy splits interleaved, as in the real files; 3 and 4 have 6 and 7
# sentences (as some COCO images do).
COCO_SPLITS = [
    "test", "restval", "val", "train", "restval", "test", "train", "val", "train", "test"
]
COCO_SENTENCES = {3: 6, 4: 7}
FLICKR_SPLITS = ["train", "val", "test", "train", "test", "train", "val"]


def _coco(**changes):
    images = [
        _image(i, split, coco=True, n=COCO_SENTENCES.get(i, 5))
        for i, split in enumerate(COCO_SPLITS)
    ]
    return {"images": images, "dataset": "coco", **changes}


def _flickr():
    images = [_image(i, split) for i, split in enumerate(FLICKR_SPLITS)]
    return {"images": images, "dataset": "flickr30k"}


def _write(tmp_path, data, name="dataset.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def _lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def _quiet_import(*args, **kwargs):
    # The small files differ from the standard sizes: that warning is
    # expected everywhere but where a test checks it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return import_captions(*args, **kwargs)


def _captions_of(indices, n=5):
    return [f"Image {i} caption {j}." for i in indices for j in range(n)]


def test_flickr30k_splits_keep_the_json_order(tmp_path):
    out = tmp_path / "f30k_precomp"
    with pytest.warns(UserWarning, match="differ from the standard flickr30k"):
        summary = import_captions(_write(tmp_path, _flickr()), out)
    expected = {"train": [0, 3, 5], "dev": [1, 6], "test": [2, 4]}
    assert sorted(summary) == ["dev", "test", "train"]
    for split, indices in expected.items():
        assert _lines(out / f"{split}_caps.txt") == _captions_of(indices)
        assert _lines(out / f"{split}_image_ids.txt") == [str(i) for i in indices]
        assert _lines(out / f"{split}_filenames.txt") == [f"{i}.jpg" for i in indices]
        assert summary[split]["images"] == len(indices)
        assert summary[split]["captions"] == 5 * len(indices)
        assert summary[split]["images_with_extra_sentences"] == 0
        assert summary[split]["expected_images"] == KARPATHY_SPLIT_SIZES["flickr30k"][split]
    assert not (out / "testall_caps.txt").exists()  # COCO only
    assert summary["dev"]["sources"] == ("val",)
    assert set(summary["test"]["files"]) == {
        str(out / f"test_{kind}.txt") for kind in ("caps", "image_ids", "filenames")
    }


def test_coco_train_is_train_then_restval_and_extra_sentences_are_dropped(tmp_path):
    out = tmp_path / "coco_precomp"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = import_captions(_write(tmp_path, _coco()), out)
    # "train" images in the file's order, then "restval" in the file's order.
    expected = {"train": [3, 6, 8, 1, 4], "dev": [2, 7], "test": [0, 5, 9], "testall": [0, 5, 9]}
    for split, indices in expected.items():
        assert _lines(out / f"{split}_caps.txt") == _captions_of(indices)
        assert _lines(out / f"{split}_image_ids.txt") == [str(1000 + i) for i in indices]
    assert _lines(out / "train_filenames.txt")[:2] == [
        "train2014/COCO_train2014_000000001003.jpg",
        "train2014/COCO_train2014_000000001006.jpg",
    ]
    assert summary["train"]["images_with_extra_sentences"] == 2
    assert summary["train"]["sources"] == ("train", "restval")
    assert summary["dev"]["images_with_extra_sentences"] == 0
    messages = [str(w.message) for w in caught]
    assert any("more than 5 sentences (per split: train 2)" in m for m in messages)
    assert any("train 5 (standard: 113287)" in m for m in messages)


def test_coco_test_is_the_first_1000_test_images_and_testall_all(tmp_path):
    images = [_image(i, "test", coco=True) for i in range(1002)]
    images += [_image(1002, "train", coco=True), _image(1003, "val", coco=True)]
    summary = _quiet_import(_write(tmp_path, {"images": images, "dataset": "coco"}), tmp_path)
    assert summary["test"]["images"] == 1000 == KARPATHY_SPLIT_SIZES["coco"]["test"]
    assert summary["testall"]["images"] == 1002
    test_ids = _lines(tmp_path / "test_image_ids.txt")
    assert test_ids == _lines(tmp_path / "testall_image_ids.txt")[:1000]


def test_captions_are_one_line_each(tmp_path):
    raws = ["A dog\nruns\t fast. ", " Two  spaces\r\nstay. ", "x", "y\u2028z", "\tend"]
    data = {"images": [_image(0, "test", raws=raws)], "dataset": "flickr8k"}
    _quiet_import(_write(tmp_path, data), tmp_path)
    assert _lines(tmp_path / "test_caps.txt") == [
        "A dog runs fast.", "Two  spaces stay.", "x", "y z", "end"
    ]


@pytest.mark.parametrize("dataset", ["flickr30k", "coco"])
def test_written_captions_load_with_features(tmp_path, dataset):
    data = _coco() if dataset == "coco" else _flickr()
    summary = _quiet_import(_write(tmp_path, data), tmp_path / "out")
    for split, entry in summary.items():
        n = entry["images"]
        np.save(tmp_path / "out" / f"{split}_ims.npy", np.zeros((n, 2, 4), np.float32))
        loaded = load_split(tmp_path / "out", split)
        assert loaded.n_images == n and loaded.n_captions == entry["captions"]
        assert loaded.captions == _lines(tmp_path / "out" / f"{split}_caps.txt")
        ids = _lines(tmp_path / "out" / f"{split}_image_ids.txt")
        # Caption c names its image's index in the file: it belongs to ids[c // 5].
        for c in (0, loaded.n_captions - 1):
            index = int(loaded.captions[c].split()[1])
            expected_id = 1000 + index if dataset == "coco" else index
            assert ids[int(loaded.image_of_caption([c])[0])] == str(expected_id)


def test_dataset_comes_from_the_file_or_the_argument(tmp_path):
    data = _flickr()
    del data["dataset"]
    path = _write(tmp_path, data)
    with pytest.raises(ValueError, match=r"names no dataset.*pass `dataset`"):
        import_captions(path, tmp_path / "a")
    summary = _quiet_import(path, tmp_path / "b", dataset="flickr30k")
    assert "testall" not in summary
    with pytest.raises(ValueError, match="Unknown dataset"):
        import_captions(path, tmp_path / "c", dataset="mscoco")
    data["dataset"] = "mscoco"
    with pytest.raises(ValueError, match=r"dataset.json: unknown 'dataset'.*'mscoco'"):
        import_captions(_write(tmp_path, data), tmp_path / "d")
    assert not any((tmp_path / name).exists() for name in "acd")
    assert set(KARPATHY_DATASETS) == set(KARPATHY_SPLIT_SIZES)


def _broken(change):
    data = _coco()
    change(data["images"])
    return data


@pytest.mark.parametrize(
    "data, message",
    [
        ('{"images": [\n  {"split": "train",}\n]}',
         r"dataset.json is not valid JSON: .* line 2, column"),
        ("[1, 2]", r"dataset.json must hold an object with an 'images' list"),
        (_broken(lambda im: im[2].pop("split")), r"dataset.json: image 2 has no 'split' key"),
        (_broken(lambda im: im[4].pop("sentences")), r"image 4 has no 'sentences' key"),
        (_broken(lambda im: im[1].pop("cocoid")), r"image 1 has no 'cocoid' key"),
        (_broken(lambda im: im[3].pop("filename")), r"image 3 has no 'filename' key"),
        (_broken(lambda im: im.__setitem__(5, "x")), r"image 5 must be an object"),
        (_broken(lambda im: im[6].update(split="validation")),
         r"image 6 has an unknown split: .*'validation'"),
        (_broken(lambda im: im[0].update(cocoid=True)),
         r"image 0: expected 'cocoid' to be an integer"),
        (_broken(lambda im: im[0].update(cocoid=-1)), r"image 0 has a negative 'cocoid'"),
        (_broken(lambda im: im[7].update(cocoid=1002)),
         r"images 2 and 7 have the same cocoid 1002"),
        (_broken(lambda im: im[8]["sentences"][3].update(raw=" \n\t ")),
         r"image 8 \(cocoid 1008\), sentence 3 is an empty caption"),
        (_broken(lambda im: im[8]["sentences"][1].pop("raw")),
         r"image 8 \(cocoid 1008\), sentence 1 has no 'raw' key"),
        (_broken(lambda im: im[9].update(filename="a\nb.jpg")),
         r"image 9 \(cocoid 1009\): expected a file name"),
    ],
)
def test_bad_files_are_named_and_write_nothing(tmp_path, data, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train_caps.txt").write_text("old\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        import_captions(_write(tmp_path, data), out)
    assert sorted(os.listdir(out)) == ["train_caps.txt"]
    assert (out / "train_caps.txt").read_text(encoding="utf-8") == "old\n"


def test_an_empty_sentence_past_the_fifth_is_ignored(tmp_path):
    # The reference reads only the first 5: a bad 7th does not matter.
    data = _coco()
    data["images"][4]["sentences"][6]["raw"] = "  "
    summary = _quiet_import(_write(tmp_path, data), tmp_path / "out")
    assert summary["train"]["images_with_extra_sentences"] == 2


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        import_captions(tmp_path / "nowhere.json", tmp_path)


def test_images_with_fewer_sentences_are_an_error_unless_skipped(tmp_path):
    data = _coco()
    data["images"][6]["sentences"] = data["images"][6]["sentences"][:3]
    data["images"][7]["sentences"] = []
    path = _write(tmp_path, data)
    message = (
        r"2 image\(s\) have fewer than 5 sentences: image 6 \(cocoid 1006, split "
        r"'train', 3 sentences\), image 7 \(cocoid 1007, split 'val', 0 sentences\)"
    )
    with pytest.raises(ValueError, match=message):
        import_captions(path, tmp_path / "strict")
    assert not (tmp_path / "strict").exists()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = import_captions(path, tmp_path / "out", skip_short=True)
    assert any("left out 2 image(s)" in str(w.message) for w in caught)
    assert _lines(tmp_path / "out" / "train_image_ids.txt") == ["1003", "1008", "1001", "1004"]
    assert _lines(tmp_path / "out" / "dev_image_ids.txt") == ["1002"]
    assert summary["train"]["images_skipped"] == 1 and summary["train"]["images"] == 4
    assert summary["dev"]["images_skipped"] == 1
    assert summary["test"]["images_skipped"] == 0


def test_a_split_without_images_gets_no_files(tmp_path):
    data = {"images": [_image(0, "train"), _image(1, "test")], "dataset": "flickr30k"}
    summary = _quiet_import(_write(tmp_path, data), tmp_path / "out")
    assert summary["dev"]["images"] == 0 and summary["dev"]["files"] == ()
    assert sorted(os.listdir(tmp_path / "out")) == [
        f"{split}_{kind}.txt"
        for split in ("test", "train")
        for kind in ("caps", "filenames", "image_ids")
    ]


def test_captions_per_image_is_an_option(tmp_path):
    summary = _quiet_import(_write(tmp_path, _flickr()), tmp_path / "out", captions_per_image=2)
    assert _lines(tmp_path / "out" / "dev_caps.txt") == _captions_of([1, 6], n=2)
    assert summary["dev"]["images_with_extra_sentences"] == 2
    np.save(tmp_path / "out" / "dev_ims.npy", np.zeros((2, 2, 4), np.float32))
    assert load_split(tmp_path / "out", "dev", captions_per_image=2).n_captions == 4
    with pytest.raises(ValueError, match="captions_per_image"):
        import_captions(_write(tmp_path, _flickr()), tmp_path / "x", captions_per_image=0)


def test_a_failure_while_writing_leaves_no_final_file(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "dev_caps.txt").write_text("old\n", encoding="utf-8")
    write = karpathy._write_lines
    calls = []

    def failing(path, lines):
        calls.append(path)
        if len(calls) == 5:
            raise OSError("No space left on device")
        write(path, lines)

    monkeypatch.setattr(karpathy, "_write_lines", failing)
    with pytest.raises(OSError, match="No space left"):
        _quiet_import(_write(tmp_path, _flickr()), out)
    assert len(calls) == 5
    # Neither a new file under its final name nor a temporary is left.
    assert sorted(os.listdir(out)) == ["dev_caps.txt"]
    assert (out / "dev_caps.txt").read_text(encoding="utf-8") == "old\n"
