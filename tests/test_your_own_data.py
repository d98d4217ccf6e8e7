"""The README's "your own data" path, as a new user runs it: a Karpathy split
file and a feature TSV imported, a model trained for an epoch, queried with
an attention figure; each step one command."""

import json
import os
import warnings

import numpy as np
import pytest
from test_features_tsv import tsv_line, write_tsv

from scan_keras.cli import main
from scan_keras.data import load_split, write_toy_precomp

pytestmark = [pytest.mark.once, pytest.mark.slow]  # a training run

SPLITS = {"train": 40, "dev": 10, "test": 10}
KARPATHY = {"train": "train", "dev": "val", "test": "test"}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A learnable toy folder, rewritten as the files people have."""
    toy = str(tmp_path_factory.mktemp("toy"))
    write_toy_precomp(toy, n_images=SPLITS, img_dim=16, seed=5)
    files = tmp_path_factory.mktemp("files")
    images, lines, next_id = [], [], 1000
    for split in SPLITS:
        data = load_split(toy, split)
        for i in range(data.n_images):
            features = np.asarray(data.images[i])
            boxes = np.array([[10 * r, 5, 10 * r + 9, 40] for r in range(len(features))], "float32")
            lines.append(tsv_line(next_id, features, boxes, width=200, height=60))
            sentences = data.captions[5 * i : 5 * i + 5]
            images.append({
                "imgid": next_id, "filename": f"{next_id}.jpg", "split": KARPATHY[split],
                "sentences": [{"raw": s, "tokens": s.split()} for s in sentences],
            })
            next_id += 1
    # Shuffled: the importer puts the features in the captions' order.
    order = np.random.default_rng(0).permutation(len(lines))
    write_tsv(files / "a.tsv", [lines[k] for k in order[: len(order) // 2]])
    write_tsv(files / "b.tsv", [lines[k] for k in order[len(order) // 2 :]])
    with open(files / "dataset_flickr30k.json", "w") as f:
        json.dump({"dataset": "flickr30k", "images": images}, f)
    return toy, files


def test_from_files_to_a_query(source, tmp_path, capsys):
    toy, files = source
    data = str(tmp_path / "data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the toy's split sizes are not Flickr30K's
        assert main(["import-captions", str(files / "dataset_flickr30k.json"), "--out", data]) == 0
    for split in SPLITS:
        assert main([
            "import-features", "--tsv", str(files / "a.tsv"), "--tsv", str(files / "b.tsv"),
            "--ids", os.path.join(data, f"{split}_image_ids.txt"),
            "--out", data, "--split", split,
        ]) == 0
        imported, original = load_split(data, split), load_split(toy, split)
        np.testing.assert_array_equal(imported.images, original.images)
        assert imported.captions == original.captions
    run = str(tmp_path / "run")
    assert main([
        "train", "--preset", "f30k_t2i_avg", "--data-dir", data, "--out", run,
        "--epochs", "1", "--batch-size", "20", "--embed-size", "16", "--word-dim", "8",
        "--workers", "0", "--tokenizer", "regex", "--verbose", "0",
    ]) == 0
    capsys.readouterr()
    model = os.path.join(run, "model_best.keras")
    figure = str(tmp_path / "why.png")
    caption = load_split(data, "test").captions[0]
    assert main(["query", model, data, caption, "-k", "3", "--explain", figure]) == 0
    out = capsys.readouterr().out
    assert os.path.getsize(figure) > 1000 and figure in out
    # The ranking is the model's similarity, sorted.
    import keras

    import scan_keras  # noqa: F401

    trained = keras.saving.load_model(model)
    test = load_split(data, "test")
    sims = trained.similarity(test.images, np.asarray([trained.vocabulary.encode(caption)]))[:, 0]
    rows = out.strip().splitlines()[2:5]
    assert [int(r.split()[1]) for r in rows] == list(np.argsort(-sims, kind="stable")[:3])
    assert [int(r.split()[2]) for r in rows] == [1050 + int(r.split()[1]) for r in rows]
