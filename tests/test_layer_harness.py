"""Every public layer, and its main variants, through `layer_harness`; and
broken layers, to show that the harness fails when it should.

Sizes are tiny (d <= 6, a handful of regions and words): the harness checks
plumbing (config, shapes, dtypes, compiled paths, gradients, saving), while
the numbers themselves are checked against float64 references elsewhere
(test_attention.py, test_encoders.py, test_global.py).
"""

import keras
import numpy as np
import pytest
from keras import ops

from helpers import lengths_to_mask
from layer_harness import run_layer_test
from scan_keras.layers import (
    CaptionEncoder,
    GlobalSimilarity,
    RegionEncoder,
    StackedCrossAttention,
    SumMaxSimilarity,
)
from scan_keras.layers.validation import is_concrete

N_IMAGES, N_REGIONS, N_CAPTIONS, N_WORDS, DIM = 2, 4, 3, 5, 6


def pair_inputs(rng, images_mask=False):
    """Images and captions of the pairwise layers, I != C so that swapped
    axes show. The padding holds random values, not zeros: masks must hide
    it. Caption lengths run from full to a single word."""
    inputs = {
        "images": rng.normal(size=(N_IMAGES, N_REGIONS, DIM)).astype("float32"),
        "captions": rng.normal(size=(N_CAPTIONS, N_WORDS, DIM)).astype("float32"),
        "captions_mask": lengths_to_mask([N_WORDS, 3, 1], N_WORDS),
    }
    if images_mask:
        inputs["images_mask"] = lengths_to_mask([N_REGIONS, 2], N_REGIONS)
    return inputs


# Token ids padded with 0, the CaptionEncoder's padding id; int32 because
# JAX (without x64) would truncate int64 with a warning.
TOKENS = np.array([[3, 4, 5, 6, 2], [1, 2, 9, 0, 0], [7, 0, 0, 0, 0]], "int32")


REGIONS_MASK = lengths_to_mask([N_REGIONS, 2], N_REGIONS)


def features(rng):
    return {"features": rng.normal(size=(N_IMAGES, N_REGIONS, 5)).astype("float32")}


def masked_features(rng):
    return {**features(rng), "mask": REGIONS_MASK}


# --------------------------------------------------------------------------
# The public layers


@pytest.mark.parametrize("no_imgnorm", [False, True])
def test_region_encoder(rng, no_imgnorm):
    report = run_layer_test(
        RegionEncoder,
        {"embed_size": DIM, "no_imgnorm": no_imgnorm},
        features(rng),
        expected_output_shape=(N_IMAGES, N_REGIONS, DIM),
        num_trainable_weights=2,  # the projection's kernel and bias
        num_non_trainable_weights=0,
        supports_masking=True,
    )
    norms = np.linalg.norm(report.outputs, axis=-1)
    if no_imgnorm:
        assert not np.allclose(norms, 1.0)
    else:
        np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_region_encoder_passes_its_mask_on(rng):
    run_layer_test(
        RegionEncoder,
        {"embed_size": DIM},
        masked_features(rng),
        expected_output_shape=(N_IMAGES, N_REGIONS, DIM),
        num_trainable_weights=2,
        expected_mask=REGIONS_MASK,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "options,num_weights",
    [
        # Embedding table + forward and backward GRU (kernel, recurrent
        # kernel, bias each).
        ({}, 1 + 2 * 3),
        # Two stacked bidirectional layers, the inner one concatenating.
        ({"num_layers": 2, "no_txtnorm": True}, 1 + 2 * 2 * 3),
    ],
    ids=["bigru", "two_layers_no_txtnorm"],
)
def test_caption_encoder(options, num_weights):
    report = run_layer_test(
        CaptionEncoder,
        {"vocab_size": 10, "word_dim": 4, "embed_size": DIM, **options},
        {"token_ids": TOKENS},
        expected_output_shape=TOKENS.shape + (DIM,),
        num_trainable_weights=num_weights,
        num_non_trainable_weights=0,
        supports_masking=True,
        # Token id 0 is padding: the mask flows out with the word vectors.
        expected_mask=TOKENS != 0,
    )
    # Padded words come out as zeros, whatever the GRU's state there.
    np.testing.assert_array_equal(report.outputs[TOKENS == 0], 0.0)


@pytest.mark.parametrize(
    "init_kwargs,images_mask,attention_shape",
    [
        ({"cross_attn": "t2i", "lambda_softmax": 9.0}, False, None),
        (
            {"cross_attn": "t2i", "agg_func": "logsumexp", "lambda_lse": 6.0},
            True,
            (N_IMAGES, N_CAPTIONS, N_WORDS, N_REGIONS),
        ),
        ({"cross_attn": "i2t", "lambda_softmax": 4.0}, True, None),
        (
            {"cross_attn": "i2t", "lambda_softmax": 4.0, "agg_func": "max"},
            False,
            (N_IMAGES, N_CAPTIONS, N_REGIONS, N_WORDS),
        ),
    ],
    ids=["t2i", "t2i_lse_attention", "i2t_images_mask", "i2t_max_attention"],
)
def test_stacked_cross_attention(
    rng, init_kwargs, images_mask, attention_shape
):
    inputs = pair_inputs(rng, images_mask=images_mask)
    expected_shape = (N_IMAGES, N_CAPTIONS)
    call_kwargs = {}
    if attention_shape is not None:
        call_kwargs["return_attention_scores"] = True
        expected_shape = (expected_shape, attention_shape)
    report = run_layer_test(
        StackedCrossAttention,
        init_kwargs,
        inputs,
        call_kwargs,
        expected_output_shape=expected_shape,
        num_trainable_weights=0,
        num_non_trainable_weights=0,
    )
    if attention_shape is not None:
        # Zero weight on padded words (t2i: axis 2; i2t: the last axis).
        attention = report.outputs[1]
        padded = ~inputs["captions_mask"]
        if init_kwargs["cross_attn"] == "t2i":
            assert np.all(attention[:, padded] == 0.0)
        else:
            assert np.all(attention.transpose(0, 1, 3, 2)[:, padded] == 0.0)


@pytest.mark.parametrize("masks", [True, False], ids=["masked", "unmasked"])
def test_global_similarity(rng, masks):
    inputs = pair_inputs(rng, images_mask=masks)
    if not masks:
        del inputs["captions_mask"]
    report = run_layer_test(
        GlobalSimilarity,
        {"eps": 1e-6},
        inputs,
        expected_output_shape=(N_IMAGES, N_CAPTIONS),
        num_trainable_weights=0,
        num_non_trainable_weights=0,
        supports_masking=True,
    )
    assert np.all(np.abs(report.outputs) <= 1.0 + 1e-6)  # cosines


@pytest.mark.parametrize("cross_attn", ["t2i", "i2t"])
def test_sum_max_similarity(rng, cross_attn):
    inputs = pair_inputs(rng, images_mask=True)
    report = run_layer_test(
        SumMaxSimilarity,
        {"cross_attn": cross_attn},
        inputs,
        expected_output_shape=(N_IMAGES, N_CAPTIONS),
        num_trainable_weights=0,
        num_non_trainable_weights=0,
        supports_masking=True,
    )
    # A sum of cosines over the real words (t2i) or regions (i2t).
    counts = (
        inputs["captions_mask"].sum(axis=1)[None, :]
        if cross_attn == "t2i"
        else inputs["images_mask"].sum(axis=1)[:, None]
    )
    assert np.all(np.abs(report.outputs) <= counts + 1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "layer_class,init_kwargs,make_inputs",
    [
        (CaptionEncoder, {"vocab_size": 10, "word_dim": 4, "embed_size": DIM},
         lambda rng: {"token_ids": TOKENS}),
        (StackedCrossAttention, {"cross_attn": "t2i"}, pair_inputs),
    ],
    ids=["caption_encoder", "attention"],
)
def test_bfloat16(rng, layer_class, init_kwargs, make_inputs):
    # The default policy is float16; bfloat16 (TPUs, recent CPUs) too.
    run_layer_test(
        layer_class,
        init_kwargs,
        make_inputs(rng),
        mixed_precision="mixed_bfloat16",
        checks=("mixed_precision",),
    )


# --------------------------------------------------------------------------
# The harness fails on broken layers


@keras.saving.register_keras_serializable(package="layer_harness_tests")
class ForgetfulRegionEncoder(RegionEncoder):
    """Forgets `no_imgnorm` in its config: a loaded copy normalises."""

    def get_config(self):
        config = super().get_config()
        del config["no_imgnorm"]
        return config


@keras.saving.register_keras_serializable(package="layer_harness_tests")
class LazyRegionEncoder(RegionEncoder):
    """Makes its projection in build() but leaves it to create its weights
    on the first call, so build() alone does not build it."""

    def build(self, features_shape):
        self.fc = keras.layers.Dense(self.embed_size, name="fc")
        self.built = True


@keras.saving.register_keras_serializable(package="layer_harness_tests")
class DeadWeightRegionEncoder(RegionEncoder):
    """Holds a weight that its computation never uses: it cannot train."""

    def build(self, features_shape):
        super().build(features_shape)
        self.unused = self.add_weight(shape=(3,), initializer="ones", name="unused")


@keras.saving.register_keras_serializable(package="layer_harness_tests")
class TransposedSpecSimilarity(GlobalSimilarity):
    """Announces (captions, images) outputs but computes (images, captions)."""

    def compute_output_spec(self, images, captions, images_mask=None, captions_mask=None):
        return keras.KerasTensor(
            (captions.shape[0], images.shape[0]), dtype=self.compute_dtype
        )


@keras.saving.register_keras_serializable(package="layer_harness_tests")
class EagerOnlySimilarity(GlobalSimilarity):
    """Shifts its scores only when it runs eagerly (on concrete values),
    so compiled code computes something else."""

    def call(self, images, captions, images_mask=None, captions_mask=None):
        scores = super().call(images, captions, images_mask, captions_mask)
        return scores + 0.5 if is_concrete(scores) else scores


@keras.saving.register_keras_serializable(package="layer_harness_tests")
class Float32Similarity(GlobalSimilarity):
    """Always returns float32, whatever the dtype policy says."""

    def call(self, images, captions, images_mask=None, captions_mask=None):
        return ops.cast(
            super().call(images, captions, images_mask, captions_mask), "float32"
        )

    def compute_output_spec(self, images, captions, images_mask=None, captions_mask=None):
        return keras.KerasTensor((images.shape[0], captions.shape[0]), "float32")


@keras.saving.register_keras_serializable(package="layer_harness_tests")
class MaskDroppingRegionEncoder(RegionEncoder):
    """Loses the regions' mask: the attention after it would attend to
    padded regions."""

    def compute_mask(self, features, mask=None):
        return None


class UnregisteredSimilarity(GlobalSimilarity):
    """Not registered as serialisable: `.keras` files cannot name it."""


@pytest.mark.parametrize(
    "layer_class,init_kwargs,make_inputs,options,message",
    [
        # The dropped argument is caught by name...
        (ForgetfulRegionEncoder, {"embed_size": DIM, "no_imgnorm": True},
         features, {}, r"config check failed: constructor argument `no_imgnorm`"),
        # ...and, if declared unsaved, by the clone's different outputs.
        (ForgetfulRegionEncoder, {"embed_size": DIM, "no_imgnorm": True},
         features, {"unsaved_kwargs": ("no_imgnorm",)},
         r"config check failed: .*from_config clone"),
        (LazyRegionEncoder, {"embed_size": DIM}, features, {},
         r"build check failed: calling the built layer changed its weights"),
        (DeadWeightRegionEncoder, {"embed_size": DIM}, features, {},
         r"training check failed: .*unchanged.*unused"),
        (TransposedSpecSimilarity, {}, pair_inputs, {},
         (r"symbolic check failed: output 0 of the symbolic call \(batch axes "
          r"known\) has shape \(3, 2\)")),
        (MaskDroppingRegionEncoder, {"embed_size": DIM}, masked_features,
         {"expected_mask": REGIONS_MASK},
         r"symbolic check failed: the first output .* carries no Keras mask"),
        (EagerOnlySimilarity, {}, pair_inputs, {"checks": ("eager",)},
         r"eager check failed: Model.predict \(compiled\)"),
        (Float32Similarity, {}, pair_inputs, {"checks": ("mixed_precision",)},
         r"mixed_precision check failed: symbolic output 0 .* is float32"),
        (UnregisteredSimilarity, {}, pair_inputs, {"checks": ("saving",)},
         r"saving check failed: raised"),
    ],
    ids=[
        "config_drops_argument",
        "config_drops_argument_clone",
        "weights_made_in_call",
        "weight_without_gradient",
        "output_spec_transposed",
        "mask_dropped",
        "eager_differs_from_compiled",
        "ignores_mixed_precision",
        "not_registered",
    ],
)
@pytest.mark.slow
# The dead weight's case warns, rightly, that it gets no gradient.
@pytest.mark.filterwarnings("ignore:Gradients do not exist:UserWarning")
def test_harness_fails_on_broken_layers(
    rng, layer_class, init_kwargs, make_inputs, options, message
):
    if layer_class is EagerOnlySimilarity and keras.backend.backend() == "torch":
        pytest.skip("PyTorch's Model.predict runs eagerly: the paths agree there.")
    with pytest.raises(AssertionError, match=message) as failure:
        run_layer_test(layer_class, init_kwargs, make_inputs(rng), **options)
    # The message names the layer first, so a report says what broke.
    assert str(failure.value).startswith(f"{layer_class.__name__}(")


def test_harness_rejects_inputs_that_call_does_not_take(rng):
    with pytest.raises(ValueError, match="not arguments of call"):
        run_layer_test(GlobalSimilarity, {}, {**pair_inputs(rng), "regions": 1})
    with pytest.raises(ValueError, match="first argument"):
        run_layer_test(GlobalSimilarity, {}, {"captions": np.ones((2, 3, 4))})
    with pytest.raises(ValueError, match="Unknown checks"):
        run_layer_test(GlobalSimilarity, {}, pair_inputs(rng), checks=("speed",))
