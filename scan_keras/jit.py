"""Whole functions of a model compiled at once, for evaluation on JAX.

Eager JAX compiles every operation separately the first time it meets a
shape: scoring a first validation set that way cost about 25 s. Compiling
the whole function with `jax.jit` costs one compilation per input shape,
so callers also pad their blocks to a few fixed shapes (`pad_rows`).
The model's weights are inputs of the compiled function, not constants
baked into it: training between two calls needs no new compilation.
Other backends run the function as it is.
"""

import keras
import numpy as np


def compiled(model, name, fn):
    """`fn(*arrays)` compiled with `model`'s weights as inputs (JAX only).

    Args:
        model: the Keras model or layer whose variables `fn` reads.
        name: a key for the cache kept on `model`; one per distinct `fn`
            (include any setting `fn` closes over).
        fn: a function of backend arrays that calls `model`'s layers.

    Returns:
        A function with `fn`'s signature; `fn` itself on other backends.
    """
    if keras.backend.backend() != "jax":
        return fn
    cache = model.__dict__.get("_scan_keras_jit")
    if cache is None:
        cache = {}
        # Set past Keras' attribute tracking: nothing to save or walk.
        object.__setattr__(model, "_scan_keras_jit", cache)
    variables = list(model.variables)
    key = (name, tuple(id(v) for v in variables))
    if key not in cache:
        import jax

        def stateless(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(*args)

        cache[key] = jax.jit(stateless)
    jitted = cache[key]
    return lambda *args: jitted([v.value for v in variables], *args)


def is_compiled(fn, original):
    """Whether `compiled` returned something other than `original`."""
    return fn is not original


def pad_rows(x, rows=None):
    """`x` padded to `rows` rows by repeating its first row.

    Keeps compiled input shapes fixed; callers cut the output back to
    `len(x)`. With `rows=None` (eager backends), `x` itself.
    """
    if rows is None or len(x) >= rows:
        return x
    return np.concatenate([x, np.repeat(x[:1], rows - len(x), axis=0)], axis=0)
