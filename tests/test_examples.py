"""The code examples in the README and the docstrings run as written."""

import pathlib
import re

import keras
import pytest

import scan_keras.baselines
import scan_keras.data
import scan_keras.evaluation
import scan_keras.layers
import scan_keras.losses
import scan_keras.models
import scan_keras.presets

ROOT = pathlib.Path(__file__).resolve().parents[1]
PUBLIC = [
    scan_keras.layers.StackedCrossAttention,
    scan_keras.layers.RegionEncoder,
    scan_keras.layers.CaptionEncoder,
    scan_keras.losses.ContrastiveLoss,
    scan_keras.evaluation.retrieval_metrics,
    scan_keras.presets,
    scan_keras.data.tokenize,
    scan_keras.data.Vocabulary,
    scan_keras.data.load_split,
    scan_keras.data.PairBatches,
    scan_keras.data.write_toy_precomp,
    scan_keras.models.SCAN,
    scan_keras.layers.GlobalSimilarity,
    scan_keras.layers.SumMaxSimilarity,
    scan_keras.baselines.GlobalEmbedding,
    scan_keras.baselines.SumMax,
]


def python_blocks(text):
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def dedent_block(block):
    lines = block.splitlines()
    indent = min(len(l) - len(l.lstrip()) for l in lines if l.strip())
    return "\n".join(l[indent:] for l in lines)


@pytest.mark.slow
@pytest.mark.parametrize("obj", PUBLIC, ids=lambda o: o.__name__.split(".")[-1])
def test_docstring_example_runs(obj):
    blocks = python_blocks(obj.__doc__)
    assert blocks, f"{obj.__name__} has no example"
    for block in blocks:
        exec(compile(dedent_block(block), obj.__name__, "exec"), {})


@pytest.mark.slow
def test_readme_example_runs():
    blocks = python_blocks((ROOT / "README.md").read_text())
    assert blocks
    namespace = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert tuple(namespace["sims"].shape) == (4, 4)
    assert float(keras.ops.convert_to_numpy(namespace["loss"])) >= 0
