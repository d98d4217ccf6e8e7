"""The paper's variants: hyper-parameters and the recalls they reported.

Each preset names one row of Tables 1 and 2 of the paper (section 4
"Experiments"): a dataset
(`f30k`, `coco`), a formulation (`t2i` = the paper's Text-Image, `i2t` =
Image-Text) and a pooling (`avg`, `lse`). It holds what the reference code
was run with (its README and defaults) and the recalls the paper prints,
so a result can be shown beside the paper's.

```python
from scan_keras.presets import get_preset

preset = get_preset("f30k_t2i_avg")
preset.architecture.lambda_softmax  # 9.0: what the model is
preset.recipe.learning_rate  # 0.0002: how it is trained
preset.paper["1k"]["i2t_r1"]  # 61.8: what the paper reports
```
"""

import dataclasses

from scan_keras.layers.options import MATH_OPTIONS

# (i2t R@1, R@5, R@10, t2i R@1, R@5, R@10) per protocol, from the paper.
# i2t is sentence retrieval (an image queries), t2i image retrieval.
_PAPER = {
    ("f30k", "t2i", "lse"): {"1k": (61.1, 85.4, 91.5, 43.3, 71.9, 80.9)},
    ("f30k", "t2i", "avg"): {"1k": (61.8, 87.5, 93.7, 45.8, 74.4, 83.0)},
    ("f30k", "i2t", "lse"): {"1k": (67.7, 88.9, 94.0, 44.0, 74.2, 82.6)},
    ("f30k", "i2t", "avg"): {"1k": (67.9, 89.0, 94.4, 43.9, 74.2, 82.8)},
    ("coco", "t2i", "lse"): {"5fold1k": (67.5, 92.9, 97.6, 53.0, 85.4, 92.9)},
    ("coco", "t2i", "avg"): {"5fold1k": (70.9, 94.5, 97.8, 56.4, 87.0, 93.9)},
    ("coco", "i2t", "lse"): {
        "5fold1k": (68.4, 93.9, 98.0, 54.8, 86.1, 93.3),
        "5k": (46.4, 77.4, 87.2, 34.4, 63.7, 75.7),
    },
    ("coco", "i2t", "avg"): {"5fold1k": (69.2, 93.2, 97.5, 54.4, 86.0, 93.6)},
}

# The ensembles of two separately trained models (similarities averaged).
_PAPER_ENSEMBLES = {
    "f30k_t2i_avg+i2t_lse": {"1k": (67.4, 90.3, 95.8, 48.6, 77.7, 85.2)},
    "coco_t2i_lse+i2t_avg": {"5fold1k": (72.7, 94.8, 98.4, 58.8, 88.4, 94.8)},
    "coco_t2i_avg+i2t_lse": {"5k": (50.4, 82.2, 90.0, 38.6, 69.3, 80.4)},
}

_RECALL_NAMES = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")


def _as_metrics(recalls):
    metrics = dict(zip(_RECALL_NAMES, recalls))
    metrics["rsum"] = round(sum(recalls), 1)
    return metrics


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What a variant's model is: its encoders, its attention and its loss.

    The fields are `SCAN`'s constructor arguments of the same names.
    """

    cross_attn: str = "t2i"
    agg_func: str = "mean"
    lambda_softmax: float = 9.0
    lambda_lse: float = 6.0
    raw_feature_norm: str = "clipped_l2norm"
    embed_size: int = 1024
    word_dim: int = 300
    img_dim: int = 2048
    num_layers: int = 1
    bidirectional: bool = True
    no_imgnorm: bool = False
    margin: float = 0.2
    max_violation: bool = True

    def attention_config(self):
        """Keyword arguments of `StackedCrossAttention`."""
        return {name: getattr(self, name) for name in MATH_OPTIONS}

    def model_config(self):
        """Keyword arguments of `SCAN`."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a variant is trained: the reference code's optimisation.

    The learning rate at epoch e (0-based) is
    `learning_rate * 0.1 ** (e // lr_update)`. For the first
    `warmup_epochs` epochs the hinge sums over all negatives, and the
    hardest negatives (`max_violation`) take over after them; the paper
    uses hardest negatives from the first step (0).
    """

    learning_rate: float = 2e-4
    lr_update: int = 15
    num_epochs: int = 30
    batch_size: int = 128
    grad_clip: float = 2.0
    warmup_epochs: int = 0

    def learning_rate_at(self, epoch):
        """The step schedule of the reference code (0-based `epoch`)."""
        return self.learning_rate * 0.1 ** (epoch // self.lr_update)


_PARTS = {
    "architecture": tuple(f.name for f in dataclasses.fields(Architecture)),
    "recipe": tuple(f.name for f in dataclasses.fields(Recipe)),
}


@dataclasses.dataclass(frozen=True, init=False)
class Preset:
    """One variant of the paper, in three parts: its `architecture`, its
    training `recipe` and the recalls the `paper` reports.

    The parts' fields read as the preset's own (`preset.learning_rate`),
    and can be given or replaced flat:
    `dataclasses.replace(preset, num_epochs=5, embed_size=64)`.

    Args:
        name: the variant's name, such as `"f30k_t2i_avg"`.
        dataset: `"f30k"`, `"coco"` (or another name).
        architecture: an `Architecture`.
        recipe: a `Recipe`.
        paper: the paper's recalls per protocol, `{"1k": {"i2t_r1": ...}}`.
        **fields: fields of `Architecture` or `Recipe` replacing theirs.
    """

    name: str
    dataset: str
    architecture: Architecture
    recipe: Recipe
    paper: dict

    def __init__(self, name, dataset, architecture=None, recipe=None, paper=None, **fields):
        unknown = set(fields) - set(_PARTS["architecture"]) - set(_PARTS["recipe"])
        if unknown:
            raise TypeError(f"Preset got unknown fields: {sorted(unknown)}")
        parts = {"architecture": architecture or Architecture(), "recipe": recipe or Recipe()}
        for part, names in _PARTS.items():
            changes = {k: v for k, v in fields.items() if k in names}
            parts[part] = dataclasses.replace(parts[part], **changes)
        for key, value in dict(
            name=name, dataset=dataset, paper={} if paper is None else paper, **parts
        ).items():
            object.__setattr__(self, key, value)

    def __getattr__(self, name):
        # Called only for names the preset itself lacks: the parts' fields.
        for part, names in _PARTS.items():
            if name in names and part in self.__dict__:
                return getattr(self.__dict__[part], name)
        raise AttributeError(f"'Preset' object has no attribute {name!r}")

    @property
    def protocol(self):
        """The protocol the paper's main table uses for this dataset."""
        return "1k" if self.dataset == "f30k" else "5fold1k"

    def attention_config(self):
        """Keyword arguments of `StackedCrossAttention` for this variant."""
        return self.architecture.attention_config()

    def model_config(self):
        """Keyword arguments of `SCAN` for this variant."""
        return self.architecture.model_config()

    def learning_rate_at(self, epoch):
        """The step schedule of the reference code (0-based `epoch`)."""
        return self.recipe.learning_rate_at(epoch)


def _make_presets():
    # Reference code settings: F30K lr 2e-4, decay after 15 of 30 epochs;
    # COCO lr 5e-4, decay after 10 of 20. lambda_1 is 9 for t2i and 4 for
    # i2t; lambda_2 (LSE only) 6 for t2i, and 5 (F30K) or 20 (COCO) for i2t.
    schedule = {
        "f30k": dict(learning_rate=2e-4, lr_update=15, num_epochs=30),
        "coco": dict(learning_rate=5e-4, lr_update=10, num_epochs=20),
    }
    lambda_lse = {
        ("f30k", "t2i"): 6.0,
        ("coco", "t2i"): 6.0,
        ("f30k", "i2t"): 5.0,
        ("coco", "i2t"): 20.0,
    }
    presets = {}
    for (dataset, cross_attn, pooling), results in _PAPER.items():
        name = f"{dataset}_{cross_attn}_{pooling}"
        presets[name] = Preset(
            name=name,
            dataset=dataset,
            architecture=Architecture(
                cross_attn=cross_attn,
                agg_func="mean" if pooling == "avg" else "logsumexp",
                lambda_softmax=9.0 if cross_attn == "t2i" else 4.0,
                lambda_lse=lambda_lse[dataset, cross_attn],
            ),
            recipe=Recipe(**schedule[dataset]),
            paper={p: _as_metrics(r) for p, r in results.items()},
        )
    return presets


PRESETS = _make_presets()
PAPER_ENSEMBLES = {
    name: {p: _as_metrics(r) for p, r in results.items()}
    for name, results in _PAPER_ENSEMBLES.items()
}


def get_preset(name):
    """Returns the preset `name`, e.g. `"f30k_t2i_avg"` (see `PRESETS`)."""
    if name not in PRESETS:
        raise ValueError(
            f"Unknown preset: expected one of {sorted(PRESETS)}. "
            f"Received: {name!r}"
        )
    return PRESETS[name]
