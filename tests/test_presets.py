"""The presets carry the paper's settings and numbers."""

import pytest

from scan_keras.layers import StackedCrossAttention
from scan_keras.presets import PAPER_ENSEMBLES, PRESETS, get_preset


def test_every_variant_of_tables_1_and_2():
    assert sorted(PRESETS) == sorted(
        f"{d}_{c}_{p}" for d in ("f30k", "coco") for c in ("t2i", "i2t") for p in ("avg", "lse")
    )


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_configures_the_layer(name):
    preset = get_preset(name)
    layer = StackedCrossAttention(**preset.attention_config())
    assert layer.cross_attn == preset.cross_attn
    assert layer.lambda_softmax == (9.0 if preset.cross_attn == "t2i" else 4.0)
    assert preset.agg_func == ("mean" if name.endswith("avg") else "logsumexp")
    assert preset.protocol in preset.paper
    recalls = [v for k, v in preset.paper[preset.protocol].items() if k != "rsum"]
    assert preset.paper[preset.protocol]["rsum"] == pytest.approx(sum(recalls))


def test_numbers_from_the_paper():
    assert get_preset("f30k_i2t_avg").paper["1k"]["i2t_r1"] == 67.9
    assert get_preset("f30k_t2i_lse").paper["1k"]["rsum"] == pytest.approx(434.1)
    assert get_preset("coco_i2t_lse").lambda_lse == 20.0
    assert get_preset("f30k_i2t_lse").lambda_lse == 5.0
    assert get_preset("coco_i2t_lse").paper["5k"]["rsum"] == pytest.approx(384.8)
    assert PAPER_ENSEMBLES["f30k_t2i_avg+i2t_lse"]["1k"]["rsum"] == pytest.approx(465.0)


def test_learning_rate_schedule():
    f30k, coco = get_preset("f30k_t2i_avg"), get_preset("coco_t2i_avg")
    assert f30k.learning_rate_at(14) == pytest.approx(2e-4)
    assert f30k.learning_rate_at(15) == pytest.approx(2e-5)
    assert (coco.learning_rate, coco.num_epochs) == (5e-4, 20)
    assert coco.learning_rate_at(10) == pytest.approx(5e-5)


def test_unknown_preset():
    with pytest.raises(ValueError, match="Unknown preset"):
        get_preset("f30k_t2i_max")
