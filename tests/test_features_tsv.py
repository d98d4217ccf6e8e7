"""Region features from bottom-up-attention TSV files into the precomputed layout."""

import base64
import os

import numpy as np
import pytest

from scan_keras.data import features_tsv, load_split
from scan_keras.data.features_tsv import (
    import_features,
    read_image_ids,
    read_tsv_records,
)

# Independent of the Keras backend (see conftest.py).
pytestmark = pytest.mark.once

DIM = 6  # feature values per box: small, the format is the same at 2048


def b64(array):
    return base64.b64encode(np.asarray(array, dtype=np.float32).tobytes()).decode()


def tsv_line(image_id, features, boxes=None, width=640, height=480, num_boxes=None):
    """One line of the extractor's format: id, w, h, num_boxes, boxes, features."""
    features = np.asarray(features, dtype=np.float32)
    if boxes is None:
        boxes = np.arange(4 * len(features), dtype=np.float32).reshape(-1, 4) + image_id
    num_boxes = len(features) if num_boxes is None else num_boxes
    return "\t".join(
        [str(image_id), str(width), str(height), str(num_boxes), b64(boxes), b64(features)]
    )


def write_tsv(path, lines, final_newline=True):
    text = "\n".join(lines) + ("\n" if final_newline else "")
    with open(path, "w", encoding="ascii", newline="") as f:
        f.write(text)
    return str(path)


def image(image_id, n_boxes=3):
    """Features that say which image they are: exact values to compare."""
    rng = np.random.default_rng(image_id)
    return rng.standard_normal((n_boxes, DIM)).astype(np.float32)


def write_images(path, ids, n_boxes=3, **kwargs):
    return write_tsv(path, [tsv_line(i, image(i, n_boxes)) for i in ids], **kwargs)


def final_files(folder):
    return sorted(name for name in os.listdir(folder) if not name.startswith("."))


def test_several_files_in_another_order_follow_the_id_list(tmp_path):
    a = write_images(tmp_path / "a.tsv", [30, 10, 50])
    b = write_images(tmp_path / "b.tsv", [20, 40])
    ids = [10, 20, 30, 40, 50]
    out = tmp_path / "out"
    summary = import_features([a, b], ids, out, "test", progress=False)
    assert summary["images"] == 5 and summary["lines"] == 5 and summary["skipped"] == 0
    assert summary["bytes"] == os.path.getsize(a) + os.path.getsize(b)
    assert (summary["n_regions"], summary["img_dim"]) == (3, DIM)
    ims = np.load(out / "test_ims.npy")
    assert ims.dtype == np.float32 and ims.shape == (5, 3, DIM)
    for row, image_id in enumerate(ids):
        np.testing.assert_array_equal(ims[row], image(image_id))  # exact
    boxes = np.load(out / "test_boxes.npy")
    np.testing.assert_array_equal(boxes[1], np.arange(12, dtype=np.float32).reshape(3, 4) + 20)
    sizes = np.load(out / "test_image_sizes.npy")
    assert sizes.dtype == np.int32 and sizes.tolist() == [[640, 480]] * 5
    assert read_image_ids(out / "test_image_ids.txt") == ids
    assert final_files(out) == [
        "test_boxes.npy", "test_image_ids.txt", "test_image_sizes.npy", "test_ims.npy"
    ]


def test_the_result_loads_with_load_split(tmp_path):
    path = write_images(tmp_path / "a.tsv", [7, 3, 5], n_boxes=4)
    import_features(path, [5, 7, 3], tmp_path, "dev", progress=False)
    with open(tmp_path / "dev_caps.txt", "w", encoding="utf-8") as f:
        f.write("".join(f"caption {c} of image {c // 5}\n" for c in range(15)))
    split = load_split(tmp_path, "dev")
    assert (split.n_images, split.n_regions, split.img_dim) == (3, 4, DIM)
    np.testing.assert_array_equal(split.image_features([0, 2]), [image(5, 4), image(3, 4)])


def test_records_are_read_and_checked(tmp_path):
    path = write_tsv(tmp_path / "a.tsv", [tsv_line(1, image(1)), tsv_line(2, image(2))])
    records = list(read_tsv_records(path))
    assert [(r.image_id, r.line, r.path) for r in records] == [(1, 1, path), (2, 2, path)]
    np.testing.assert_array_equal(records[1].features, image(2))
    assert records[0].boxes.shape == (3, 4) and (records[0].width, records[0].height) == (640, 480)
    assert [r.image_id for r in read_tsv_records([path], only_ids={2})] == [2]


def test_windows_line_endings_are_read(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_bytes((tsv_line(1, image(1)) + "\r\n").encode())
    (record,) = read_tsv_records(path)
    np.testing.assert_array_equal(record.features, image(1))


def test_a_missing_id_names_it_and_writes_nothing(tmp_path):
    path = write_images(tmp_path / "a.tsv", [1, 2])
    with pytest.raises(ValueError, match=r"1 of the 3 image ids .* \(first: 99\)"):
        import_features(path, [1, 99, 2], tmp_path / "out", "test", progress=False)
    assert os.listdir(tmp_path / "out") == []  # no final file, no temporary


def test_a_duplicated_id_across_files_names_both_places(tmp_path):
    a = write_images(tmp_path / "a.tsv", [1, 2])
    b = write_images(tmp_path / "b.tsv", [3, 2])
    with pytest.raises(ValueError, match=rf"Image 2 .* twice: {a}:2 and {b}:2"):
        import_features([a, b], [1, 2, 3], tmp_path / "out", "test", progress=False)
    assert os.listdir(tmp_path / "out") == []


def test_a_truncated_last_line_is_named(tmp_path):
    full = tsv_line(2, image(2))
    path = write_tsv(tmp_path / "a.tsv", [tsv_line(1, image(1)), full[: len(full) // 2]],
                     final_newline=False)
    with pytest.raises(ValueError, match=rf"{path}:2: .*looks truncated"):
        import_features(path, [1, 2], tmp_path / "out", "test", progress=False)
    # Cut among the columns, or in the features at whole base64 quanta: they
    # decode, to 9 values (3 rows of 3, unlike line 1's 6) or to 57 bytes.
    prefix, features = full.rsplit("\t", 1)
    cuts = [full[: full.index("\t", 10)]] + [f"{prefix}\t{features[:k]}" for k in (48, 76)]
    for cut in cuts:
        write_tsv(path, [tsv_line(1, image(1)), cut], final_newline=False)
        with pytest.raises(ValueError, match=rf"{path}:2: .*looks truncated"):
            list(read_tsv_records(path))
    assert not os.path.exists(tmp_path / "out" / "test_ims.npy")


@pytest.mark.parametrize(
    "field, value, message",
    [
        (0, "12a", r"column `image_id`: expected an integer"),
        (1, "640.0", r"column `image_w`: expected an integer"),
        (2, "", r"column `image_h`: expected an integer"),
        (3, "0", r"column `num_boxes`: expected an integer of at least 1"),
        (3, "4", r"num_boxes is 4, but `boxes` holds 12 float32 values"),
        (4, "not base64!", r"column `boxes` is not valid base64"),
        (5, b64(np.zeros(7)), r"`features` holds 7 float32 values, not num_boxes=3 rows"),
        (5, base64.b64encode(b"12345").decode(), r"decodes to 5 bytes, not whole float32"),
        (5, "b'" + b64(np.zeros((3, DIM))) + "'", r"looks like a Python bytes repr"),
    ],
)
def test_a_bad_field_names_file_line_and_column(tmp_path, field, value, message):
    fields = tsv_line(8, image(8)).split("\t")
    fields[field] = value
    path = write_tsv(tmp_path / "a.tsv", [tsv_line(7, image(7)), "\t".join(fields)])
    with pytest.raises(ValueError, match=rf"{path}:2: .*{message}"):
        import_features(path, [7, 8], tmp_path / "out", "test", progress=False)
    assert os.listdir(tmp_path / "out") == []


def test_wrong_column_count_and_empty_line(tmp_path):
    path = write_tsv(tmp_path / "a.tsv", [tsv_line(1, image(1)) + "\textra"])
    with pytest.raises(ValueError, match=rf"{path}:1: expected 6 tab-separated columns .*found 7"):
        list(read_tsv_records(path))
    write_tsv(path, [tsv_line(1, image(1)), ""])
    with pytest.raises(ValueError, match=rf"{path}:2: .* found an empty line"):
        list(read_tsv_records(path))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_are_refused(tmp_path, bad):
    features = image(2)
    features[1, 3] = bad
    path = write_tsv(tmp_path / "a.tsv", [tsv_line(1, image(1)), tsv_line(2, features)])
    with pytest.raises(ValueError, match=rf"{path}:2: image 2: `features` holds NaN"):
        import_features(path, [1, 2], tmp_path / "out", "test", progress=False)


def test_feature_size_must_agree_across_lines(tmp_path):
    other = np.zeros((3, DIM + 2), np.float32)
    path = write_tsv(tmp_path / "a.tsv", [tsv_line(1, image(1)), tsv_line(2, other)])
    with pytest.raises(ValueError, match=rf"{path}:2: .* 8 feature values per box, .*:1 has 6"):
        list(read_tsv_records(path))


def test_image_id_lists(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("5\n 3 \n11\n")
    assert read_image_ids(path) == [5, 3, 11]
    path.write_text("5\n\n3\n")
    with pytest.raises(ValueError, match=r"ids.txt: line 2 is blank"):
        read_image_ids(path)
    path.write_text("5\nx7\n")
    with pytest.raises(ValueError, match=r"line 2: expected a non-negative integer"):
        read_image_ids(path)
    path.write_text("5\n3\n5\n")
    with pytest.raises(ValueError, match=r"image id 5 is on line 1 and again on line 3"):
        read_image_ids(path)
    tsv = write_images(tmp_path / "a.tsv", [1])
    with pytest.raises(ValueError, match=r"`image_ids` twice: at positions 0 and 2"):
        import_features(tsv, [1, 2, 1], tmp_path / "out", "test", progress=False)
    with pytest.raises(ValueError, match=r"read_image_ids"):
        import_features(tsv, str(path), tmp_path / "out", "test", progress=False)


def test_a_varying_number_of_boxes_is_refused_by_default(tmp_path):
    lines = [tsv_line(1, image(1, 3)), tsv_line(2, image(2, 3)), tsv_line(3, image(3, 5))]
    path = write_tsv(tmp_path / "a.tsv", lines)
    with pytest.raises(ValueError, match=rf"{path}:3: image 3 has 5 boxes, but image 1 "
                       rf"\({path}:1\) has 3\. .*pass `num_boxes=N`"):
        import_features(path, [1, 2, 3], tmp_path / "out", "test", progress=False)
    assert os.listdir(tmp_path / "out") == []


def test_num_boxes_pads_with_zeros_and_writes_the_counts(tmp_path):
    lines = [tsv_line(1, image(1, 3)), tsv_line(2, image(2, 5)), tsv_line(3, image(3, 1))]
    path = write_tsv(tmp_path / "a.tsv", lines)
    out = tmp_path / "out"
    summary = import_features(path, [2, 3, 1], out, "train", num_boxes=5, progress=False)
    assert summary["n_regions"] == 5
    ims, boxes = np.load(out / "train_ims.npy"), np.load(out / "train_boxes.npy")
    assert ims.shape == (3, 5, DIM) and boxes.shape == (3, 5, 4)
    counts = np.load(out / "train_num_regions.npy")
    assert counts.dtype == np.int32 and counts.tolist() == [5, 1, 3]
    for row, (image_id, count) in enumerate([(2, 5), (3, 1), (1, 3)]):
        np.testing.assert_array_equal(ims[row, :count], image(image_id, count))
        assert not ims[row, count:].any() and not boxes[row, count:].any()
    # An image with more boxes than asked for is refused.
    with pytest.raises(ValueError, match=rf"{path}:2: image 2 has 5 boxes, more than num_boxes=4"):
        import_features(path, [2, 3, 1], out, "train", num_boxes=4, progress=False)
    # A later import without padding drops the stale counts.
    write_images(path, [1, 2, 3])
    import_features(path, [2, 3, 1], out, "train", progress=False)
    assert not os.path.exists(out / "train_num_regions.npy")


def test_ids_not_in_the_list_are_skipped_and_counted(tmp_path):
    path = write_images(tmp_path / "a.tsv", [1, 2, 3, 4, 5])
    summary = import_features(path, [4, 2], tmp_path, "test", progress=False)
    assert (summary["images"], summary["lines"], summary["skipped"]) == (2, 5, 3)
    np.testing.assert_array_equal(np.load(tmp_path / "test_ims.npy"), [image(4), image(2)])


def test_an_existing_image_id_file_must_match(tmp_path):
    path = write_images(tmp_path / "a.tsv", [1, 2])
    (tmp_path / "test_image_ids.txt").write_text("2\n1\n")  # the captions' order
    with pytest.raises(ValueError, match=r"test_image_ids.txt lists other image ids"):
        import_features(path, [1, 2], tmp_path, "test", progress=False)
    import_features(path, [2, 1], tmp_path, "test", progress=False)


def test_an_interrupted_import_leaves_no_final_file_and_a_rerun_succeeds(tmp_path, monkeypatch):
    path = write_images(tmp_path / "a.tsv", [1, 2, 3, 4])
    out = tmp_path / "out"
    write = features_tsv._RowWriter.write
    calls = []

    def write_then_fail(self, index, rows):
        calls.append(index)
        if len(calls) == 5:  # the third image's features: two written before
            raise KeyboardInterrupt
        write(self, index, rows)

    monkeypatch.setattr(features_tsv._RowWriter, "write", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        import_features(path, [4, 3, 2, 1], out, "test", progress=False)
    assert os.listdir(out) == []
    monkeypatch.undo()
    # A killed import leaves its temporaries: the next one removes those of
    # its split, and only those.
    stale = [".tmp-999-0123abcd-test_ims.npy", ".tmp-999-0123abcd-test_boxes.npy"]
    kept = [".tmp-999-0123abcd-testall_ims.npy", ".tmp-999-0123abcd-test_caps.txt"]
    for name in stale + kept:
        (out / name).write_bytes(b"partial")
    import_features(path, [4, 3, 2, 1], out, "test", progress=False)
    assert sorted(n for n in os.listdir(out) if n.startswith(".")) == sorted(kept)
    np.testing.assert_array_equal(np.load(out / "test_ims.npy")[0], image(4))


def test_a_failed_reimport_keeps_the_previous_files(tmp_path):
    path = write_images(tmp_path / "a.tsv", [1, 2])
    import_features(path, [1, 2], tmp_path, "test", progress=False)
    before = (tmp_path / "test_ims.npy").read_bytes()
    write_tsv(path, [tsv_line(1, image(1))])
    with pytest.raises(ValueError, match=r"first: 2"):
        import_features(path, [1, 2], tmp_path, "test", progress=False)
    assert (tmp_path / "test_ims.npy").read_bytes() == before


def test_argument_checks(tmp_path):
    path = write_images(tmp_path / "a.tsv", [1])
    with pytest.raises(ValueError, match=r"Unknown split"):
        import_features(path, [1], tmp_path, "val", progress=False)
    with pytest.raises(ValueError, match=r"num_boxes"):
        import_features(path, [1], tmp_path, "test", num_boxes=0, progress=False)
    with pytest.raises(FileNotFoundError, match=r"TSV file not found: .*missing.tsv"):
        import_features([path, tmp_path / "missing.tsv"], [1], tmp_path, "test")
    with pytest.raises(ValueError, match=r"at least one image id"):
        import_features(path, [], tmp_path, "test")


def test_a_progress_bar_only_on_a_terminal(tmp_path, capsys, monkeypatch):
    path = write_images(tmp_path / "a.tsv", [1, 2])
    import_features(path, [1, 2], tmp_path, "test")
    assert capsys.readouterr().out == ""  # captured: not a terminal
    monkeypatch.setattr(features_tsv.sys.stdout, "isatty", lambda: True, raising=False)
    import_features(path, [1, 2], tmp_path, "test")
    assert f"{os.path.getsize(path)}/{os.path.getsize(path)}" in capsys.readouterr().out


def test_the_readme_quotes_the_stored_benchmark():
    import json
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parent.parent
    stored = json.loads((root / "benchmarks/results/import_features.json").read_text())
    readme = " ".join((root / "README.md").read_text().split())
    stated = re.search(
        r"read ([\d.]+) GB of TSV at (\d+) MB/s with a peak of (\d+) MB resident.*?"
        r"COCO-size TSV \(([\d,]+) images, ([\d.]+) GB\) takes about (\d+) minutes",
        readme,
    )
    assert stated, "README.md states the importer's benchmark"
    assert float(stated[1]) == stored["input_gb"]
    assert int(stated[2]) == stored["mb_per_s"]
    assert int(stated[3]) == stored["peak_rss_mb"]
    assert float(stated[5]) == stored["coco_gb"]
    assert int(stated[6]) == stored["coco_minutes"]
    # The memory target: under 1 GB resident, whatever the input size.
    assert stored["peak_rss_mb"] < 1024 and stored["input_gb"] >= 2
