"""The two-stage search: a dual-encoder shortlist in FAISS, re-ranked by SCAN.

With a shortlist as large as the collection it is full SCAN, query by
query and in the paper's recalls; smaller shortlists are checked against
a NumPy reference of the same ranking; the index folder round-trips and
refuses what it was not built for."""

import json
import os
import shutil
import sys

import keras
import numpy as np
import pytest
from helpers import model_for_folder

from scan_keras.cli import main
from scan_keras.data import Vocabulary, load_split, write_toy_precomp
from scan_keras.evaluation import evaluate, retrieval_metrics
from scan_keras.baselines import GlobalEmbedding
from scan_keras.models import SCAN
from scan_keras.retrieval import (
    DualEncoder,
    EncodedStore,
    IndexWriter,
    StoreWriter,
    TwoStageSearch,
    two_stage_matrix,
    two_stage_metrics,
)
from scan_keras.retrieval.ranking import exact_shortlists
from scan_keras.search import Collection

N_TEST = 12


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("toy"))
    write_toy_precomp(path, n_images={"train": 8, "dev": 4, "test": N_TEST}, img_dim=12, seed=3)
    return path


def _model(folder, seed=0, cls=SCAN, embed_size=16):
    return model_for_folder(folder, 12, cls, embed_size, seed)


@pytest.fixture(scope="module")
def model(folder):
    return _model(folder)


@pytest.fixture(scope="module")
def index(folder, model, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("index") / "test")
    return TwoStageSearch.build(model, folder, out, split="test")


def test_a_full_shortlist_ranks_images_as_scan_does(folder, model, index):
    split = load_split(folder, "test")
    collection = Collection(model, folder, "test")
    for caption in split.captions[::7]:
        hits = index.query_text(caption, k=N_TEST, shortlist=N_TEST)
        want = collection.rank_images(caption, k=N_TEST)
        assert [h.index for h in hits] == [h.index for h in want]
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in want], rtol=1e-5)


def test_a_full_shortlist_ranks_captions_as_scan_does(folder, model, index):
    collection = Collection(model, folder, "test")
    n_captions = 5 * N_TEST
    for image in (0, 5, N_TEST - 1):
        hits = index.query_image(image, k=10, shortlist=n_captions)
        want = collection.rank_captions(image, k=10)
        assert [h.index for h in hits] == [h.index for h in want]
        assert [h.caption for h in hits] == [h.caption for h in want]
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in want], rtol=1e-5)
    features = load_split(folder, "test").image_features([5])[0]
    by_features = index.query_image(features, k=3, shortlist=20)
    assert [h.index for h in by_features] == [h.index for h in index.query_image(5, k=3, shortlist=20)]


def test_full_shortlists_give_the_full_evaluation(folder, model):
    split = load_split(folder, "test")
    metrics, cost = two_stage_metrics(model, split, shortlist=N_TEST, caption_shortlist=5 * N_TEST)
    assert metrics == pytest.approx(evaluate(model, split))
    assert cost["t2i_pairs"] == cost["i2t_pairs"] == cost["all_pairs"] == 5 * N_TEST**2


def _reference_ranks(dual, scan, k):
    """0-based rank of each item per query (columns), built as a list:
    the k best by dual score (ties by index), by SCAN score, then the rest
    by dual score."""
    ranks = np.empty(dual.shape, np.int64)
    for q in range(dual.shape[1]):
        by_dual = sorted(range(dual.shape[0]), key=lambda i: (-dual[i, q], i))
        shortlist = sorted(by_dual[:k], key=lambda i: -scan[i, q])
        for rank, item in enumerate(shortlist + by_dual[k:]):
            ranks[item, q] = rank
    return ranks


def _reference_metrics(dual, scan, k_images, k_captions, cpi):
    t2i = _reference_ranks(dual, scan, k_images)  # images per caption
    i2t = _reference_ranks(dual.T, scan.T, k_captions)  # captions per image
    n_images = dual.shape[0]
    own = np.arange(dual.shape[1]) // cpi
    t2i_rank = t2i[own, np.arange(dual.shape[1])]
    i2t_rank = np.array([i2t[i * cpi : (i + 1) * cpi, i].min() for i in range(n_images)])
    out = {}
    for name, ranks in (("i2t", i2t_rank), ("t2i", t2i_rank)):
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = 100.0 * np.mean(ranks < k)
        out[f"{name}_medr"] = float(np.floor(np.median(ranks)) + 1)
        out[f"{name}_meanr"] = float(np.mean(ranks) + 1)
    return out


def test_the_ranking_matrix_ranks_as_the_reference(rng):
    dual = rng.normal(size=(7, 14))
    scan = rng.normal(size=(7, 14)) * 5
    for k in (1, 3, 7):
        t2i_lists = exact_shortlists(dual, k)
        i2t_lists = exact_shortlists(dual.T, 2 * k)
        t2i = two_stage_matrix(dual, t2i_lists, np.take_along_axis(scan.T, t2i_lists, 1))
        i2t = two_stage_matrix(dual.T, i2t_lists, np.take_along_axis(scan, i2t_lists, 1)).T
        got = {**{n: v for n, v in retrieval_metrics(i2t, 2).items() if n.startswith("i2t")},
               **{n: v for n, v in retrieval_metrics(t2i, 2).items() if n.startswith("t2i")}}
        assert got == pytest.approx(_reference_metrics(dual, scan, k, 2 * k, 2))


def test_short_lists_recall_as_the_numpy_reference(folder, model):
    split = load_split(folder, "test")
    token_ids = model.vocabulary.encode_batch(split.captions)
    scan = model.similarity(split.images, token_ids)
    dual = DualEncoder(model, "mean")
    images = dual.embed_images(split.images[:])
    captions = dual.embed_captions(token_ids)
    for k in (2, 5):
        metrics, cost = two_stage_metrics(model, split, shortlist=k, caption_shortlist=3 * k)
        want = _reference_metrics(images @ captions.T, scan, k, 3 * k, 5)
        assert {n: v for n, v in metrics.items() if n != "rsum"} == pytest.approx(want, abs=1e-9)
        assert cost["t2i_pairs"] == split.n_captions * k
        assert cost["i2t_pairs"] == split.n_images * 3 * k


def test_the_global_dual_encoder(folder, model, tmp_path):
    baseline = _model(folder, seed=1, cls=GlobalEmbedding)
    split = load_split(folder, "test")
    search = TwoStageSearch.build(model, folder, tmp_path / "g", dual="global", dual_model=baseline)
    caption = split.captions[3]
    want = baseline.similarity(split.images, np.asarray([baseline.vocabulary.encode(caption)]))[:, 0]
    _, _, candidates = search.rank_text(caption, k=2, shortlist=4)
    assert set(candidates) == set(np.argsort(-want, kind="stable")[:4])
    metrics, _ = two_stage_metrics(model, split, 4, dual="global", dual_model=baseline,
                                   index=search)
    exact, _ = two_stage_metrics(model, split, 4, dual="global", dual_model=baseline)
    assert metrics == pytest.approx(exact)


def test_the_round_trip_and_its_metadata(folder, model, index, tmp_path):
    path = tmp_path / "model.keras"
    model.save(path)
    out = tmp_path / "index"
    built = TwoStageSearch.build(model, folder, out, model_path=path)
    loaded = TwoStageSearch.load(out)  # the model from the recorded file
    caption = load_split(folder, "test").captions[0]
    assert loaded.query_text(caption, k=5, shortlist=8) == built.query_text(caption, k=5, shortlist=8)
    assert loaded.query_image(3, k=4, shortlist=9) == built.query_image(3, k=4, shortlist=9)
    meta = json.loads((out / "index.json").read_text())
    assert meta["data"]["split"] == "test" and meta["data"]["n_images"] == N_TEST
    assert meta["data"]["n_captions"] == 5 * N_TEST
    assert meta["model"]["dim"] == meta["dual"]["dim"] == 16
    assert meta["model"]["path"] == str(path.resolve())
    assert meta["index"] == {"kind": "flat", "params": {}}
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


def test_the_store_holds_the_encoded_regions_and_words(folder, model, tmp_path):
    split = load_split(folder, "test")
    regions = keras.ops.convert_to_numpy(model.encode_images(split.images[:]))
    token_ids = model.vocabulary.encode_batch(split.captions)
    words = keras.ops.convert_to_numpy(model.encode_captions(token_ids)[0])
    for dtype, tolerance in (("float32", 1e-6), ("float16", 1e-3)):
        search = TwoStageSearch.build(model, folder, tmp_path / dtype, store_dtype=dtype)
        assert isinstance(search.regions.array, np.memmap) and search.regions.dtype == dtype
        rows = [7, 2, 7, 0]
        np.testing.assert_allclose(search.regions.gather(rows), regions[rows], atol=tolerance)
        stored = search.words.gather(np.arange(split.n_captions))
        width = words.shape[1]
        np.testing.assert_allclose(stored[:, :width], words, atol=tolerance)
        assert not stored[:, width:].any()
        np.testing.assert_array_equal(search.lengths, (token_ids != 0).sum(axis=1))


def test_a_store_is_written_whole(tmp_path):
    writer = StoreWriter(tmp_path / "s.npy", (3, 2, 4))
    writer.write(np.ones((2, 2, 4)))
    with pytest.raises(ValueError, match="2 of 3 rows"):
        writer.close()
    writer.abort()
    assert not os.listdir(tmp_path)
    with pytest.raises(ValueError, match=r"rows in \[0, 3\)"):
        writer = StoreWriter(tmp_path / "s.npy", (3, 2, 4))
        writer.write(np.zeros((3, 2, 4)))
        writer.close()
        EncodedStore(tmp_path / "s.npy").gather([3])


@pytest.mark.parametrize("approximate", ["hnsw", "ivf"])
def test_approximate_indexes(folder, model, tmp_path, approximate):
    search = TwoStageSearch.build(model, folder, tmp_path / approximate, approximate=approximate)
    caption = load_split(folder, "test").captions[9]
    exact = Collection(model, folder, "test").rank_images(caption, k=5)
    # On a dozen images the approximate search finds them all.
    assert [h.index for h in search.query_text(caption, k=5, shortlist=N_TEST)] == [
        h.index for h in exact
    ]


def test_bad_queries_are_named(folder, index):
    with pytest.raises(ValueError, match="None of the words"):
        index.query_text("zebra xylophone", k=2, shortlist=5)
    with pytest.raises(ValueError, match="non-empty caption"):
        index.query_text("  ", k=2, shortlist=5)
    with pytest.raises(ValueError, match=f"at most the {N_TEST} images"):
        index.query_text("a dog", k=5, shortlist=N_TEST + 1)
    with pytest.raises(ValueError, match="`k` of at most `shortlist`"):
        index.query_text("a dog", k=6, shortlist=5)
    with pytest.raises(ValueError, match="at most the 60 captions"):
        index.query_image(0, k=5, shortlist=61)
    with pytest.raises(ValueError, match=r"image index in \[0, 12\)"):
        index.query_image(N_TEST, k=2, shortlist=5)
    with pytest.raises(ValueError, match="`shortlist`"):
        index.query_text("a dog", shortlist=0)


def test_an_index_refuses_other_models_and_data(folder, index, tmp_path):
    with pytest.raises(ValueError, match="encodes into 8 dimensions; the index was built with 16"):
        TwoStageSearch.load(index.folder, _model(folder, embed_size=8))
    with pytest.raises(ValueError, match="not the model the index was built with"):
        TwoStageSearch.load(index.folder, _model(folder, seed=5))
    with pytest.raises(ValueError, match="built from split 'test'.*not 'dev'"):
        two_stage_metrics(index.model, load_split(folder, "dev"), 2, index=index)
    other = tmp_path / "other"
    write_toy_precomp(other, n_images={"train": 8, "test": N_TEST}, img_dim=12, seed=4)
    with pytest.raises(ValueError, match="another 'test' split"):
        two_stage_metrics(index.model, load_split(other, "test"), 2, index=index)
    with pytest.raises(ValueError, match="cuts it into folds"):
        two_stage_metrics(index.model, load_split(folder, "test"), 2, "5fold1k", index=index)


def test_broken_folders_are_named(folder, model, index, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="not an index folder"):
        TwoStageSearch.load(folder, model)
    with pytest.raises(ValueError, match="exists and is not an index folder"):
        TwoStageSearch.build(model, folder, folder)
    empty = tmp_path / "empty"
    with IndexWriter(empty, 16, (0, 6, 16)) as writer:
        writer.finish({"model": {}, "dual": {"kind": "mean"}, "data": {}})
    with pytest.raises(ValueError, match="is empty"):
        TwoStageSearch.load(empty, model)
    with pytest.raises(ValueError, match="Unknown dual encoder"):
        DualEncoder(model, "heads")
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r"scan-keras\[search\]"):
        TwoStageSearch.load(index.folder, model)


@pytest.mark.once  # the command line's plumbing
def test_the_commands_end_to_end(tmp_path, capsys):
    from scan_keras.data import write_world

    data = tmp_path / "world"
    write_world(data, {"train": 20, "test": 10}, min_count=1)
    vocabulary = Vocabulary.load(data / "vocab.json")
    keras.utils.set_random_seed(0)
    model = SCAN(vocabulary=vocabulary, img_dim=128, embed_size=16, word_dim=8)
    baseline = GlobalEmbedding(vocabulary=vocabulary, img_dim=128, embed_size=16, word_dim=8)
    paths = {}
    for name, m in (("scan", model), ("global", baseline)):
        m.build()
        paths[name] = str(tmp_path / f"{name}.keras")
        m.save(paths[name])
    out = str(tmp_path / "index")
    assert main(["index", "build", paths["scan"], str(data), "--split", "test", "--out", out]) == 0
    assert "indexed 10 images and 50 captions" in capsys.readouterr().out
    caption = load_split(data, "test").captions[12]
    assert main(["index", "query", out, caption, "-k", "3", "--shortlist", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    hits = TwoStageSearch.load(out, model).query_text(caption, k=3, shortlist=5)
    assert [int(line.split()[1]) for line in lines[2:]] == [h.index for h in hits]
    assert main(["index", "query", out, "--image", "2", "-k", "2", "--shortlist", "10"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 4
    assert main(["index", "query", out, caption, "-k", "6", "--shortlist", "5"]) == 2
    assert "`k` of at most `shortlist`" in capsys.readouterr().err
    assert main(["index", "query", out, "qwerty"]) == 2
    assert "None of the words" in capsys.readouterr().err

    hnsw = str(tmp_path / "hnsw")
    assert main(["index", "build", paths["scan"], str(data), "--out", hnsw, "--dual", "global",
                 "--dual-model", paths["global"], "--approximate", "hnsw", "--ef-search", "64",
                 "--store-dtype", "float16"]) == 0
    meta = json.loads(open(os.path.join(hnsw, "index.json")).read())
    assert meta["index"]["params"]["ef_search"] == 64 and meta["dual"]["kind"] == "global"
    assert main(["index", "build", paths["scan"], str(data), "--out", hnsw, "--nlist", "4"]) == 2
    assert "--nlist applies to --approximate ivf" in capsys.readouterr().err

    report = str(tmp_path / "eval.json")
    assert main(["evaluate", "--data-dir", str(data), "--split", "test", paths["scan"],
                 "--shortlist", "10", "--json", report]) == 0
    assert "two-stage: mean dual encoder, shortlist 10" in capsys.readouterr().out
    written = json.load(open(report))["metrics"]
    full = evaluate(model, load_split(data, "test"))
    assert {n: written[n] for n in ("t2i_r1", "t2i_r5", "t2i_r10", "t2i_medr")} == pytest.approx(
        {n: full[n] for n in ("t2i_r1", "t2i_r5", "t2i_r10", "t2i_medr")})
    assert written["shortlist"] == 10 and written["t2i_pairs"] == 500
    shutil.rmtree(out)


def test_the_documented_shortlist_table_is_the_stored_run():
    # docs/search.md quotes benchmarks/results/shortlist_recall.json.
    import json
    import re

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    stored = json.load(open(os.path.join(root, "benchmarks/results/shortlist_recall.json")))
    text = open(os.path.join(root, "docs/search.md"), encoding="utf-8").read()
    all_pairs = stored["test_images"] * stored["test_captions"]
    rows = {}
    for row in stored["rows"]:
        rows[row["method"], row["shortlist"]] = row
        if row["shortlist"] not in (10, 100, stored["test_images"]):
            continue
        recalls = " | ".join(f"{row[k]:.1f}" for k in (
            "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"))
        line = (f"| {row['method']} | {row['shortlist']} | {recalls} | {row['rsum']:.1f} | "
                f"{all_pairs / row['t2i_pairs']:.0f}x | {row['ms_per_text_query']:.1f} |")
        assert line in text, line
    prose = re.sub(r"\s+", " ", text)
    two, one = rows["full SCAN, two heads", 1000], rows["full SCAN", 1000]
    assert f"rsum {two['rsum']:.1f} against {one['rsum']:.1f}" in prose
    assert f"two stages reach rsum {rows['two-stage joint', 100]['rsum']:.1f}" in prose
    # "no dual encoder comes within 1 point of full SCAN" at k = 100.
    keys = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")
    for name in ("mean", "global", "joint"):
        full = one if name != "joint" else two
        gap = max(full[k] - rows[f"two-stage {name}", 100][k] for k in keys)
        assert gap > 1.0, name
