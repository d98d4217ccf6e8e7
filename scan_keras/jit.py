"""Whole functions of a model compiled at once, for evaluation.

Eager JAX compiles every operation separately the first time it meets a
shape: scoring a first validation set that way cost about 25 s. Compiling
the whole function with `jax.jit` costs one compilation per input shape,
so callers also pad their blocks to a few fixed shapes (`pad_rows`).
The model's weights are inputs of the compiled function, not constants
baked into it: training between two calls needs no new compilation.

TensorFlow compiles with XLA (`tf.function(jit_compile=True)`): eagerly,
the attention's elementwise tail is one pass over memory per operation;
XLA fuses it. PyTorch runs the function as it is: `torch.compile` would
unroll its Python loops over chunks, so the attention layer compiles each
chunk itself instead, when asked (`torch_compile=True`). The measurements
are in docs/performance.md.
"""

import keras
import numpy as np


def compiles():
    """Whether `compiled` compiles on this backend (JAX, TensorFlow)."""
    return keras.backend.backend() in ("jax", "tensorflow")


def compiled(model, name, fn):
    """`fn(*arrays)` compiled, reading `model`'s current weights.

    Args:
        model: the Keras model or layer whose variables `fn` reads.
        name: a key for the cache kept on `model`; one per distinct `fn`
            (include any setting `fn` closes over).
        fn: a function of backend arrays that calls `model`'s layers.

    Returns:
        A function with `fn`'s signature; `fn` itself on other backends.
    """
    if not compiles():
        return fn
    if not model.built:
        # Built inside the trace, the variables would be created with
        # traced values, which outlive it (a later `get_weights` fails).
        # SCAN's models build without input shapes.
        model.build()
    cache = model.__dict__.get("_scan_keras_jit")
    if cache is None:
        cache = {}
        # Set past Keras' attribute tracking: nothing to save or walk.
        object.__setattr__(model, "_scan_keras_jit", cache)
    variables = list(model.variables)
    key = (name, tuple(id(v) for v in variables))
    tensorflow = keras.backend.backend() == "tensorflow"
    if key not in cache:
        if tensorflow:
            import tensorflow as tf

            # A tf.function reads the variables themselves: nothing to pass.
            cache[key] = tf.function(fn, jit_compile=True)
        else:
            import jax

            def stateless(values, *args):
                mapping = list(zip(variables, values))
                with keras.StatelessScope(state_mapping=mapping):
                    return fn(*args)

            cache[key] = jax.jit(stateless)
    jitted = cache[key]
    if tensorflow:
        return jitted
    return lambda *args: jitted([v.value for v in variables], *args)


def pad_rows(x, rows):
    """`x` padded to `rows` rows by repeating its first row, where compiled.

    Keeps the input shapes of `compiled` functions fixed; callers cut the
    output back to `len(x)`. Eager backends get `x` itself.
    """
    if not compiles() or len(x) >= rows:
        return x
    return np.concatenate([x, np.repeat(x[:1], rows - len(x), axis=0)], axis=0)


def finite_rows(features, start, stop, rows_are="images"):
    """Rows `start:stop` of `features` as float32, refusing NaN and inf.

    Compiled code cannot stop on bad values, so blocks are checked as they
    are read, before they reach it.
    """
    block = np.asarray(features[start:stop], "float32")
    if not np.all(np.isfinite(block)):
        raise ValueError(
            f"`features` of {rows_are} {start}-{start + len(block) - 1} "
            "contain NaN or infinite values."
        )
    return block
