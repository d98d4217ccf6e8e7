"""The raw-similarity normalisations' building blocks against NumPy."""

import numpy as np
from keras import ops

import reference
from helpers import input_gradients
from scan_keras.layers.norms import LEAKY_SLOPE, leaky_clip


def test_leaky_clip_is_the_leaky_relu_bit_for_bit(rng):
    # On JAX it is max(s, slope * s): the same float32 values as the
    # backend's own leaky ReLU, across signs and magnitudes; and the paper's
    # clipping within float32 rounding (of the input and of the product).
    normal = rng.normal(size=1000) * 10.0 ** rng.integers(-30, 30, size=1000)
    s = np.concatenate([normal, [0.0, -0.0, 3e38, -3e38]]).astype("float32")
    out = ops.convert_to_numpy(leaky_clip(ops.convert_to_tensor(s)))
    leaky = ops.leaky_relu(ops.convert_to_tensor(s), negative_slope=LEAKY_SLOPE)
    np.testing.assert_array_equal(out, ops.convert_to_numpy(leaky))
    np.testing.assert_allclose(
        out[:1000], reference.leaky_relu(normal, LEAKY_SLOPE), rtol=2.5e-7
    )
    # XLA's CPU code flushes subnormals to zero in arithmetic (the maximum,
    # not the select): they may come out as zero, never as anything larger.
    tiny = ops.convert_to_tensor(np.array([1e-40, -1e-40], "float32"))
    assert np.all(np.abs(ops.convert_to_numpy(leaky_clip(tiny))) <= 1e-40)


def test_leaky_clip_gradient_is_one_or_the_slope(rng):
    s = rng.normal(size=200).astype("float32")
    s[np.abs(s) < 1e-3] = 0.5  # the kink at 0 is not a sample
    (grad,) = input_gradients(leaky_clip, s)
    np.testing.assert_allclose(grad, np.where(s > 0, 1.0, LEAKY_SLOPE), rtol=1e-6)
