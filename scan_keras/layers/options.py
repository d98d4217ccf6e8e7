"""The options of Stacked Cross Attention, listed once.

The layer, the model, the presets, the checkpoint converter, the fused
kernel and the command line read their choices from here.
"""

import dataclasses

from scan_keras.checks import check_choice, check_positive_number
from scan_keras.layers.norms import RAW_FEATURE_NORMS

CROSS_ATTNS = ("t2i", "i2t")
AGG_FUNCS = ("mean", "logsumexp", "max", "sum")
PRODUCT_DTYPES = ("float32", "bfloat16", "float16")
# How the scores are computed, chosen when the layer is called and never
# saved with it: "portable" (`keras.ops`, every backend) or "pallas" (one
# fused kernel, JAX on a GPU).
IMPLEMENTATIONS = ("auto", "portable", "pallas")

# The options that define what the layer computes: what `get_config` saves,
# what a model forwards to its attention and what a preset sets.
MATH_OPTIONS = (
    "cross_attn",
    "lambda_softmax",
    "agg_func",
    "lambda_lse",
    "raw_feature_norm",
)

# Normalisations that leave every similarity in [-1, 1]. With them and a
# lambda_1 up to 20, exp(lambda_1 s) needs no shift by the maximum: e and
# e^T G e stay far inside float32's range.
UNIT_BOUNDED_NORMS = (
    "clipped_l2norm",
    "l2norm",
    "l1norm",
    "clipped_l1norm",
    "softmax",
)
LAMBDA_WITHOUT_SHIFT = 20.0

# What the fused kernel computes: the l2 and l1 families (bounded, so its
# softmax skips the shift) and lambda_1 up to LAMBDA_WITHOUT_SHIFT.
FUSED_NORMS = ("clipped_l2norm", "l2norm", "clipped_l1norm", "l1norm")


def check_attention_options(
    cross_attn, lambda_softmax, agg_func, lambda_lse, raw_feature_norm, eps=1e-8
):
    """Raises a ValueError naming the first invalid option."""
    check_choice("cross_attn", cross_attn, CROSS_ATTNS)
    check_choice("agg_func", agg_func, AGG_FUNCS)
    check_choice("raw_feature_norm", raw_feature_norm, RAW_FEATURE_NORMS)
    check_positive_number("lambda_softmax", lambda_softmax)
    check_positive_number("lambda_lse", lambda_lse)
    check_positive_number("eps", eps)


def bounded_logits(raw_feature_norm, lambda_softmax):
    """Whether every logit lies in [-lambda_1, lambda_1] with lambda_1 small
    enough that exp needs no shift by the maximum."""
    return (
        raw_feature_norm in UNIT_BOUNDED_NORMS
        and lambda_softmax <= LAMBDA_WITHOUT_SHIFT
    )


def fused_unsupported(raw_feature_norm, lambda_softmax):
    """Why the fused kernel cannot compute these options, or None."""
    if raw_feature_norm not in FUSED_NORMS:
        return (
            f"the fused kernel computes raw_feature_norm in {FUSED_NORMS}, "
            f"not {raw_feature_norm!r}"
        )
    if lambda_softmax > LAMBDA_WITHOUT_SHIFT:
        return (
            "the fused kernel needs lambda_softmax <= 20 (its softmax skips "
            f"the shift by the maximum), not {lambda_softmax}"
        )
    return None



@dataclasses.dataclass(frozen=True)
class AttentionOptions:
    """The mathematics of one attention layer, as the equations read it.

    `cross_attn`, `lambda_softmax`, `agg_func`, `lambda_lse`,
    `raw_feature_norm` and `eps` as in `StackedCrossAttention`;
    `product_dtype` the operand dtype of the one large product, or None.
    """

    cross_attn: str = "t2i"
    lambda_softmax: float = 9.0
    agg_func: str = "mean"
    lambda_lse: float = 6.0
    raw_feature_norm: str = "clipped_l2norm"
    eps: float = 1e-8
    product_dtype: str | None = None

    @property
    def bounded_logits(self):
        return bounded_logits(self.raw_feature_norm, self.lambda_softmax)

    def as_dict(self):
        return dataclasses.asdict(self)
