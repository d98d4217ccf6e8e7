"""Querying a model: rankings are the evaluation's scores, sorted; the
command line prints them; `explain` draws the attention it reports."""

import os

import keras
import numpy as np
import pytest

from scan_keras.cli import main
from scan_keras.data import Vocabulary, load_split, write_toy_precomp
from scan_keras.models import SCAN
from scan_keras.search import Collection


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("toy"))
    write_toy_precomp(path, n_images={"train": 8, "dev": 4, "test": 6}, img_dim=12, seed=3)
    return path


@pytest.fixture(scope="module")
def model(folder):
    keras.utils.set_random_seed(0)
    vocabulary = Vocabulary.load(os.path.join(folder, "vocab.json"))
    model = SCAN(vocabulary=vocabulary, img_dim=12, embed_size=16, word_dim=8)
    model.build()
    return model


def test_images_are_ranked_by_the_models_similarity(folder, model):
    caption = load_split(folder, "test").captions[7]  # a caption of image 1
    hits = Collection(model, folder, "test").rank_images(caption, k=4)
    split = load_split(folder, "test")
    want = model.similarity(split.images, np.asarray([model.vocabulary.encode(caption)]))[:, 0]
    assert [h.index for h in hits] == list(np.argsort(-want, kind="stable")[:4])
    np.testing.assert_allclose([h.score for h in hits], np.sort(want)[::-1][:4], rtol=1e-6)
    assert [h.rank for h in hits] == [1, 2, 3, 4]


def test_captions_are_ranked_for_an_image(folder, model):
    split = load_split(folder, "test")
    hits = Collection(model, folder, "test").rank_captions(2, k=5)
    token_ids = model.vocabulary.encode_batch(split.captions)
    want = model.similarity(split.images[2:3], token_ids)[0]
    assert [h.index for h in hits] == list(np.argsort(-want, kind="stable")[:5])
    assert [h.caption for h in hits] == [split.captions[h.index] for h in hits]


def test_explain_draws_the_reported_attention(folder, model, tmp_path):
    collection = Collection(model, folder, "test")
    caption = load_split(folder, "test").captions[0]
    words, weights = collection.attention(0, caption)
    assert len(words) == len(model.vocabulary.encode(caption)) - 2  # no <start>, <end>
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    boxes = np.array([[4 * r, 0, 4 * r + 3, 3] for r in range(weights.shape[1])])
    path = tmp_path / "why.png"
    collection.explain(0, caption, path=path, boxes=boxes)  # no image: an outline
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="boxes"):
        collection.explain(0, caption)  # the toy folder has no boxes


def test_bad_queries_are_named(folder, model):
    collection = Collection(model, folder, "test")
    with pytest.raises(ValueError, match="non-empty caption"):
        collection.rank_images("  ")
    with pytest.raises(ValueError, match=r"image index in \[0, 6\)"):
        collection.rank_captions(6)
    with pytest.raises(ValueError, match="`k`"):
        collection.rank_images("a cat", k=0)


def test_the_command_prints_the_ranking(folder, model, tmp_path, capsys):
    path = str(tmp_path / "model.keras")
    model.save(path)
    caption = load_split(folder, "test").captions[3]
    assert main(["query", path, folder, caption, "-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    hits = Collection(model, folder, "test").rank_images(caption, k=3)
    assert [int(line.split()[1]) for line in lines[2:]] == [h.index for h in hits]
    assert main(["query", path, folder, "--image", "1", "-k", "2"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 4
    assert main(["query", path, folder]) == 2
    assert "give a caption" in capsys.readouterr().err


def test_explain_finds_the_photo_by_file_name(folder, model, tmp_path):
    import shutil

    from matplotlib.image import imsave

    data = tmp_path / "data"
    shutil.copytree(folder, data)
    n_images = load_split(folder, "test").n_images
    (data / "test_filenames.txt").write_text("".join(f"img{i}.png\n" for i in range(n_images)))
    photos = tmp_path / "photos"
    photos.mkdir()
    photo = np.zeros((30, 40, 3), np.uint8)
    photo[:, :, 0] = 200  # red: the figure's first panel shows it
    imsave(photos / "img2.png", photo)
    collection = Collection(model, str(data), "test")
    found = collection.image(2, str(photos))
    assert found.shape[:2] == (30, 40) and found[..., 0].min() > 0.7  # floats from PNG
    assert collection.image(3, str(photos)) is None
    boxes = np.array([[2 * r, 1, 2 * r + 5, 20] for r in range(6)])
    figure = collection.explain(2, load_split(folder, "test").captions[0],
                                images_dir=str(photos), boxes=boxes)
    shown = figure.axes[0].images[0].get_array()
    np.testing.assert_array_equal(np.asarray(shown)[..., 0], 200)
