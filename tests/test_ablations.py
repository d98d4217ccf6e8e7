"""The ablation runner: variants, the trained table and its file format."""

import dataclasses
import math
import os
import statistics

import keras
import numpy as np
import pytest

from scan_keras.ablations import (
    COLUMNS,
    VARIANTS,
    format_summary,
    format_table,
    get_variants,
    read_table,
    run_ablations,
    summarise,
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


def test_summary_counts_escaped_seeds_and_spreads_only_those():
    def row(variant, seed, rsum, grounding):
        return dict(
            {key: 0.0 for key in COLUMNS},
            variant=variant, question="q", seed=seed, rsum=rsum,
            grounding_accuracy=grounding,
        )

    rows = [row("a", 0, 480.0, 90.0), row("a", 1, 20.0, 30.0), row("a", 2, 470.0, 96.0),
            row("b", 0, 18.0, 10.0), row("c", 0, 300.0, 50.0)]
    a, b, c = summarise(rows)
    assert (a["runs"], a["escaped"]) == (3, 2)
    assert a["rsum_mean"] == pytest.approx(statistics.mean([480.0, 470.0]))
    assert a["rsum_sd"] == pytest.approx(statistics.stdev([480.0, 470.0]))
    assert a["grounding_accuracy_mean"] == pytest.approx(93.0)
    assert (b["escaped"], math.isnan(b["rsum_mean"])) == (0, True)
    assert (c["rsum_mean"], math.isnan(c["rsum_sd"])) == (300.0, True)
    lines = format_summary([a, b, c]).splitlines()
    assert lines[1].split()[1:5] == ["2/3", "475.0", "±", "7.1"]
    assert lines[2].split()[1:] == ["0/1", "-", "-"]


def test_tables_without_a_seed_column_and_malformed_lines(tmp_path):
    old = tmp_path / "old.csv"
    columns = [c for c in COLUMNS if c != "seed"]
    old.write_text(",".join(columns) + "\n" + ",".join(
        ["t2i_avg", "q"] + ["1.0"] * (len(columns) - 2)) + "\n")
    (back,) = read_table(old)
    assert back["seed"] == 0
    bad = tmp_path / "bad.csv"
    bad.write_text(old.read_text().replace("1.0", "many", 1))
    with pytest.raises(ValueError, match=r"bad.csv, line 2: expected numbers"):
        read_table(bad)


def test_the_script_skips_seeds_already_in_its_table(tmp_path, capsys):
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "scripts", "run_ablations.py")
    spec = importlib.util.spec_from_file_location("run_ablations_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    rows = [dict({key: 1.0 for key in COLUMNS}, variant=v.name, question=v.question, seed=3)
            for v in VARIANTS]
    write_table(rows, tmp_path / script.TABLE)
    script.main(["--out", str(tmp_path), "--seeds", "3"])
    out = capsys.readouterr().out
    assert "seeds to run: none" in out
    assert not (tmp_path / script.RECORD).exists()


def test_the_script_trains_each_seed_in_a_process_of_its_own(tmp_path, monkeypatch):
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "scripts", "run_ablations.py")
    spec = importlib.util.spec_from_file_location("run_ablations_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    commands = []
    monkeypatch.setattr(script, "write_world", lambda *args, **kwargs: None)
    monkeypatch.setattr(script.subprocess, "run", lambda command, check: commands.append(command))
    work = tmp_path / "work"
    script.main(["--out", str(tmp_path), "--seeds", "1", "2", "--work-dir", str(work),
                 "--variants", "t2i_avg"])
    assert [c[c.index("--seeds") + 1] for c in commands] == ["1", "2"]
    assert all(c[c.index("--work-dir") + 1] == str(work) for c in commands)
    assert all(c[-2:] == ["--variants", "t2i_avg"] for c in commands)


def test_the_variants_without_attention_and_with_changed_encoders_train(tmp_path):
    from scan_keras.baselines import SumMax

    data_dir = tmp_path / "world"
    write_world(data_dir, sizes={"train": 40, "dev": 10, "test": 10}, seed=2)
    base = dataclasses.replace(DEMO_PRESET, embed_size=16, word_dim=8, batch_size=20)
    names = ["t2i_sum_max", "t2i_no_imgnorm", "t2i_one_way_gru", "t2i_sum_pool"]
    rows = run_ablations(data_dir, tmp_path / "runs", base, variants=names, epochs=1,
                         seed=4, log=None)
    assert sorted(r["variant"] for r in rows) == sorted(names)
    assert {r["seed"] for r in rows} == {4}
    load = lambda name: keras.saving.load_model(tmp_path / "runs" / name / "model_best.keras")
    assert type(load("t2i_sum_max")) is SumMax
    assert load("t2i_no_imgnorm").image_encoder.no_imgnorm
    assert not load("t2i_one_way_gru").caption_encoder.bidirectional
    assert load("t2i_sum_pool").attention.agg_func == "sum"


@pytest.mark.once  # the runner's bookkeeping; the variants train per backend above
def test_a_table_run_again_reads_its_finished_runs(tmp_path):
    # An interrupted table resumes: the variants already trained are scored
    # from their saved models, the same numbers, without training again.
    data_dir = tmp_path / "world"
    write_world(data_dir, sizes={"train": 40, "dev": 10, "test": 10}, seed=3)
    base = dataclasses.replace(DEMO_PRESET, embed_size=16, word_dim=8, batch_size=20)
    first = run_ablations(data_dir, tmp_path / "runs", base, variants=["t2i_avg"], epochs=1, log=None)
    again = run_ablations(data_dir, tmp_path / "runs", base, variants=["t2i_avg"], epochs=1, log=None)
    assert again[0]["rsum"] == first[0]["rsum"]
    assert again[0]["seconds"] < first[0]["seconds"]
