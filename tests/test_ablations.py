"""The ablation runner: variants, the trained table and its file format."""

import dataclasses
import math

import keras
import numpy as np
import pytest

from scan_keras.ablations import (
    COLUMNS,
    VARIANTS,
    format_table,
    get_variants,
    read_table,
    run_ablations,
    write_table,
)
from scan_keras.data import load_split, write_world
from scan_keras.demo import DEMO_PRESET
from scan_keras.evaluation import average_similarities, retrieval_metrics

# Training runs, subprocesses or the site build: left out of the fast suite
# (`pytest -m "not slow"`).
pytestmark = pytest.mark.slow


def test_variants_are_one_change_each_and_named_uniquely():
    names = [v.name for v in VARIANTS]
    assert len(names) == len(set(names))
    for variant in VARIANTS:
        # Every change is a real field of the preset, and really differs.
        for field, value in variant.changes.items():
            assert getattr(DEMO_PRESET, field) != value, (variant.name, field)
        dataclasses.replace(DEMO_PRESET, **variant.changes)


def test_an_ensemble_brings_its_members():
    chosen = [v.name for v in get_variants(["ensemble_t2i_avg+i2t_avg"])]
    assert chosen == ["t2i_avg", "i2t_avg", "ensemble_t2i_avg+i2t_avg"]
    with pytest.raises(ValueError, match="Unknown ablation variant"):
        get_variants(["t2i_avg", "t2i_magic"])


def test_table_round_trip_and_bad_files(tmp_path):
    row = {key: float(k) + 0.04 for k, key in enumerate(COLUMNS)}
    row.update(variant="t2i_avg", question="formulation and pooling")
    row["grounding_accuracy"] = float("nan")
    path = tmp_path / "table.csv"
    write_table([row], path)
    (back,) = read_table(path)
    assert back["variant"] == "t2i_avg"
    assert back["rsum"] == pytest.approx(round(row["rsum"], 1))
    assert math.isnan(back["grounding_accuracy"])
    assert format_table([back]).splitlines()[1].split()[-1] == "-"
    with pytest.raises(FileNotFoundError, match="No ablation table"):
        read_table(tmp_path / "missing.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not an ablation table"):
        read_table(tmp_path / "other.csv")


def test_a_small_run_scores_each_variant_and_the_ensemble(tmp_path):
    data_dir = tmp_path / "world"
    write_world(data_dir, sizes={"train": 60, "dev": 20, "test": 20}, seed=1)
    base = dataclasses.replace(DEMO_PRESET, embed_size=16, word_dim=8, batch_size=32)
    rows = run_ablations(
        data_dir,
        tmp_path / "runs",
        base,
        variants=["ensemble_t2i_avg+i2t_avg"],
        epochs=1,
        log=None,
    )
    by_name = {row["variant"]: row for row in rows}
    assert list(by_name) == ["t2i_avg", "i2t_avg", "ensemble_t2i_avg+i2t_avg"]
    for row in rows:
        assert set(row) == set(COLUMNS)
        assert 0 <= row["rsum"] <= 600
    assert 0 <= by_name["t2i_avg"]["grounding_accuracy"] <= 100
    assert math.isnan(by_name["ensemble_t2i_avg+i2t_avg"]["grounding_accuracy"])
    # The ensemble's recalls are those of the averaged similarity matrices
    # of the two saved best models.
    test = load_split(data_dir, "test")
    sims = []
    for name in ("t2i_avg", "i2t_avg"):
        model = keras.saving.load_model(tmp_path / "runs" / name / "model_best.keras")
        token_ids = model.vocabulary.encode_batch(test.captions)
        sims.append(model.similarity(test.images, token_ids, verbose=0))
    expected = retrieval_metrics(average_similarities(*sims))
    np.testing.assert_allclose(
        by_name["ensemble_t2i_avg+i2t_avg"]["rsum"], expected["rsum"], atol=1e-6
    )
