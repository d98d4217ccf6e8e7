"""What the running backend and device can do: the one module that asks.

Every choice of the attention that depends on where it runs (the layout of
its large tensor, TF32 rounding, compiled loops, the fused kernel) reads a
function here; the equations themselves never branch on the backend.
Measurements behind these choices are in `docs/performance.md`.
"""

import functools

import keras
from keras import ops

# On GPUs JAX multiplies float32 matrices in TF32 (10 mantissa bits).
TF32_MANTISSA_BITS = 10


def backend():
    return keras.backend.backend()


def on_accelerator():
    """Whether the backend computes on a GPU (or another accelerator)."""
    name = backend()
    if name == "jax":
        import jax

        return jax.default_backend() != "cpu"
    if name == "torch":
        # Where Keras puts new tensors: KERAS_TORCH_DEVICE, then MPS, CUDA
        # or XPU, and `keras.device` scopes.
        return ops.zeros(()).device.type != "cpu"
    if name == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_logical_devices("GPU"))
    return False


def compiled_loop():
    """Whether blocks run as one compiled loop body (`ops.map`): on JAX.

    TensorFlow's `map_fn` costs milliseconds a step in eager mode and, under
    XLA, measured slower than the unrolled loop; torch has no compiled map.
    """
    return backend() == "jax"


def sums_in_pieces():
    """Whether long sums are split in pieces of at most 32: compiled
    TensorFlow only, whose XLA otherwise stops fusing what it sums."""
    if backend() != "tensorflow":
        return False
    import tensorflow as tf

    return not tf.executing_eagerly()


def i2t_layout():
    """The layout of i2t's large tensor: `"cwir"`, or `"ircw"` under XLA on
    TensorFlow's CPU, whose `(C W, d) x (d, I R)` product runs slower than
    the transposes the other layout saves."""
    if sums_in_pieces() and not on_accelerator():
        return "ircw"
    return "cwir"


def tf32_products():
    """Whether float32 products run in TF32: JAX on an accelerator, at
    JAX's default matmul precision."""
    if backend() != "jax" or not on_accelerator():
        return False
    import jax

    return jax.config.jax_default_matmul_precision not in ("highest", "float32")


def round_to_tf32(x):
    """`x` (float32) rounded to the nearest value with TF32's 10 mantissa
    bits (JAX): a product that then drops the other bits is exact."""
    import jax

    return jax.lax.reduce_precision(
        x, exponent_bits=8, mantissa_bits=TF32_MANTISSA_BITS
    )


def full_precision_einsum(equation, *operands):
    """`ops.einsum`, in full float32 where products default to TF32."""
    if not tf32_products():
        return ops.einsum(equation, *operands)
    import jax

    return jax.numpy.einsum(equation, *operands, precision="highest")


def float32_einsum(equation, *operands):
    """An einsum whose result is float32: JAX keeps 16-bit operands'
    float32 accumulator, other backends cast the 16-bit result."""
    dtype = keras.backend.standardize_dtype(operands[0].dtype)
    if dtype in ("float16", "bfloat16") and backend() == "jax":
        import jax.numpy as jnp

        return jnp.einsum(equation, *operands, preferred_element_type="float32")
    return ops.cast(ops.einsum(equation, *operands), "float32")


@functools.cache
def _pallas_triton_importable():
    try:
        from jax.experimental.pallas import triton  # noqa: F401
    except ImportError as error:
        return str(error)
    return None


def fused_kernel_unavailable():
    """Why the fused Pallas kernel cannot run here, or None when it can."""
    if backend() != "jax":
        return f"it needs the JAX backend, not {backend()}"
    problem = _pallas_triton_importable()
    if problem is not None:
        return f"this JAX has no Pallas Triton backend ({problem})"
    return None


# The fused kernel is chosen by "auto" only once it is measured faster than
# the portable path on a GPU (docs/performance.md); until then, on request.
FUSED_BY_DEFAULT = False


def torch_compile_scorer(fn, recompile_limit):
    """`fn` through `torch.compile` for fixed shapes, keeping up to
    `recompile_limit` compiled versions instead of torch's 8."""
    import torch

    # Fixed shapes: code for dynamic ones compiled 3-4x slower and ran
    # slower.
    compiled = torch.compile(fn, dynamic=False)
    limit = (
        "recompile_limit"
        if hasattr(torch._dynamo.config, "recompile_limit")
        else "cache_size_limit"
    )

    def scorer(*args):
        with torch._dynamo.config.patch({limit: recompile_limit}):
            return compiled(*args)

    return scorer
