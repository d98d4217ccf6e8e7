"""One harness that puts any public layer through the checks a Keras layer
owes its users: its config, `build()`, the symbolic and the compiled paths,
a training step, mixed precision and the `.keras` format.

Each check fails with an `AssertionError` whose message starts with the
layer, its arguments and the check's name, so a failing run says at once
*what* broke; an exception the layer raises inside a check is reported the
same way, chained to the original for its traceback. Checks that only read
a layer share one instance and its eager outputs (computed once: an eager
GRU on JAX compiles its scan at every call); checks that build, clone or
retype a layer make fresh ones.

Keras has a similar harness (`keras.src.testing.TestCase.run_layer_test`),
but it is private API; this one is the project's own, written for layers of
several tensor arguments whose first axes differ (I images, C captions).
"""

import contextlib
import inspect
import json
import os
import tempfile
from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

from helpers import get_keras_mask

# In this order: "build" first, since the others build layers the way Keras
# does (a symbolic call runs build() only) and rely on it making every weight.
CHECKS = (
    "build",
    "config",
    "symbolic",
    "eager",
    "training",
    "mixed_precision",
    "saving",
)

# Keyword arguments of the base layer: `get_config` saves them in forms of
# its own (`dtype` as a policy dict), so they are not compared with the
# constructor's arguments.
_BASE_LAYER_KWARGS = frozenset({"name", "dtype", "trainable", "autocast"})

# Mixed precision tolerances (absolute, in the outputs' units), by compute
# dtype. Every input and intermediate is rounded to the 16-bit format, of
# unit roundoff u = 2**-11 ~ 4.9e-4 (float16) or 2**-8 ~ 3.9e-3 (bfloat16).
# The tests keep values of order one and feature sizes d <= 16, so a dot
# product accumulates at most ~d * u of rounding; 20 * u leaves room on top
# for the attention's softmax (lambda_softmax multiplies score errors before
# the exponential) and the GRU's recurrence. Measured on CPU with the sizes
# of tests/test_layer_harness.py, on all three backends: at most 1.1e-3
# (float16) and 6.5e-3 (bfloat16), so 9.8e-3 and 7.8e-2 leave a ~10x
# margin, while a layer that computes in the wrong precision or loses a
# normalisation under 16 bits misses them by far more.
MIXED_PRECISION_ATOL = {"float16": 20 * 2.0**-11, "bfloat16": 20 * 2.0**-8}


class LayerTestReport(NamedTuple):
    """What `run_layer_test` leaves for further, layer-specific assertions.

    Attributes:
        layer: the layer instance of the eager and saving checks, built.
        model: the functional `keras.Model` around it (inputs named after
            the call arguments, as in `inputs`).
        outputs: the layer's eager outputs on `inputs`, as NumPy, nested as
            the layer returns them.
    """

    layer: Any
    model: Any
    outputs: Any


def run_layer_test(
    layer_class,
    init_kwargs,
    inputs,
    call_kwargs=None,
    *,
    expected_output_shape=None,
    num_trainable_weights=None,
    num_non_trainable_weights=None,
    supports_masking=None,
    expected_mask=None,
    unsaved_kwargs=(),
    prepend_dense=None,
    loss="mean_squared_error",
    mixed_precision="mixed_float16",
    mixed_precision_atol=None,
    atol=1e-5,
    rtol=1e-5,
    checks=CHECKS,
    tmp_dir=None,
):
    """Runs every check of a public layer and fails at the first that breaks.

    The checks, in order (each an `AssertionError` naming the layer and the
    check):

    - `"build"`: `build()` from the input shapes (batch axes unknown):
      `build(shape)` for a one-argument `build`, else
      `build(<arg>_shape=...)` for each argument; then the layer is built,
      has the expected numbers of weights, and calling it creates no more.
      The eager outputs have `expected_output_shape`, which
      `compute_output_shape` also returns (without `call_kwargs` only: it
      never sees them).
    - `"config"`: `get_config()` is JSON-serialisable, holds every
      constructor argument with its value (but `unsaved_kwargs`),
      `from_config(config).get_config() == config`, the layer survives
      `keras.saving.serialize_keras_object` and back, and the clone (with
      the original's weights) computes the same outputs.
    - `"symbolic"`: a call on `keras.Input`s, with unknown then known batch
      axes, returns KerasTensors (`compute_output_spec`) of the eager
      outputs' dtypes and shapes (unknown axes aside); masks as expected.
    - `"eager"`: the eager outputs equal, within `atol`/`rtol`, those of a
      functional model built from the symbolic call and run by
      `Model.predict` (compiled: `jax.jit`, `tf.function`).
    - `"training"`: one `fit` step of a model around the layer (with a
      `Dense` before each float input when the layer has no weights of its
      own) with SGD and `loss`: the loss is finite and every trainable
      weight changed.
    - `"mixed_precision"`: with `dtype=mixed_precision`, float outputs
      (symbolic and eager) are in the policy's compute dtype, finite, and
      within `mixed_precision_atol` of float32's with the same weights.
    - `"saving"`: the functional model saved as `.keras` and loaded with
      `keras.saving.load_model` holds a layer of the same class and config
      and computes the same outputs (atol 1e-6).

    Args:
        layer_class: the layer class to test.
        init_kwargs: dict of constructor arguments.
        inputs: dict of NumPy arrays keyed by the names of `call()`'s
            arguments (masks included, e.g. `captions_mask`). The first
            argument of `call()` is passed positionally, the others by
            keyword. Arrays may differ in their first axis (images and
            captions); all of them are one batch.
        call_kwargs: dict of non-tensor `call()` arguments, such as
            `return_attention_scores=True`.
        expected_output_shape: shape of the output, or a tuple of shapes
            for several outputs; `None` to skip.
        num_trainable_weights: expected number of trainable weights once
            built; `None` to skip.
        num_non_trainable_weights: same for non-trainable weights.
        supports_masking: expected `layer.supports_masking`; `None` to skip.
        expected_mask: boolean NumPy array, the Keras mask the (first)
            eager output must carry; `None` to skip.
        unsaved_kwargs: constructor arguments deliberately left out of the
            config (execution choices, not the layer's mathematics).
        prepend_dense: put a `Dense` before each float input of the
            training model. `None`: only when the layer has no trainable
            weights, so that the training check always has weights to move.
        loss: the loss of the training check (one per output).
        mixed_precision: dtype policy of the mixed precision check, or
            `None` to skip it. float16 by default: it has three more bits
            than bfloat16, so a tighter tolerance, and all three backends
            compute it on CPUs.
        mixed_precision_atol: absolute tolerance of that check, against
            float32; `None` takes the compute dtype's from
            `MIXED_PRECISION_ATOL`.
        atol: absolute tolerance of float32 comparisons between two paths
            that compute the same thing (eager and compiled, clone).
        rtol: relative tolerance of the same comparisons.
        checks: names of the checks to run (see `CHECKS`).
        tmp_dir: folder for the `.keras` file; a temporary one if `None`.

    Returns:
        A `LayerTestReport(layer, model, outputs)`: a built layer, the
        functional model around it and its eager outputs as NumPy.

    Example:

    ```python
    import numpy as np
    from layer_harness import run_layer_test
    from scan_keras.layers import RegionEncoder

    features = np.random.normal(size=(2, 3, 5)).astype("float32")
    report = run_layer_test(
        RegionEncoder,
        {"embed_size": 4},
        {"features": features},
        expected_output_shape=(2, 3, 4),
        num_trainable_weights=2,
    )
    report.outputs.shape  # (2, 3, 4)
    ```
    """
    call_kwargs = dict(call_kwargs or {})
    init_kwargs = dict(init_kwargs)
    unknown = set(checks) - set(CHECKS)
    if unknown:
        raise ValueError(f"Unknown checks {sorted(unknown)}; expected {CHECKS}.")
    subject = _Subject(layer_class, init_kwargs, inputs, call_kwargs)
    label = subject.label
    steps = {
        "config": lambda: _check_config(subject, unsaved_kwargs, atol, rtol),
        "build": lambda: _check_build(
            subject,
            expected_output_shape,
            num_trainable_weights,
            num_non_trainable_weights,
        ),
        "symbolic": lambda: _check_symbolic(subject, supports_masking, expected_mask),
        "eager": lambda: _check_eager(subject, expected_mask, atol, rtol),
        "training": lambda: _check_training(subject, prepend_dense, loss),
        "mixed_precision": lambda: _check_mixed_precision(
            subject, mixed_precision, mixed_precision_atol
        ),
        "saving": lambda: _check_saving(subject, tmp_dir),
    }
    for name in CHECKS:
        if name in checks and (name != "mixed_precision" or mixed_precision):
            with _reported(label, name):
                steps[name]()
    with _reported(label, "report"):
        return LayerTestReport(subject.layer, subject.model, subject.outputs)


# --------------------------------------------------------------------------
# Plumbing


@contextlib.contextmanager
def _reported(label, check):
    """Turns any failure inside one check into an AssertionError that names
    the layer and the check; the original stays chained for its traceback."""
    try:
        yield
    except Exception as error:  # reported below, not swallowed
        if isinstance(error, AssertionError):
            detail = str(error).strip()
        else:
            detail = f"raised {type(error).__name__}: {error}"
        raise AssertionError(f"{label}: {check} check failed: {detail}") from error


def _expect(condition, message):
    # Explicit, not `assert`: this module is no test module, so pytest does
    # not rewrite its asserts, and `python -O` would strip them.
    if not condition:
        raise AssertionError(message)


def _numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def _flat(outputs):
    return list(keras.tree.flatten(outputs))


def _is_float(dtype):
    return "float" in keras.backend.standardize_dtype(dtype)


class _OneBatch(keras.utils.PyDataset):
    """A dataset of exactly one batch: `predict` and `fit` see all inputs at
    once, even when their first axes differ (I images against C captions),
    which the NumPy adapter refuses as an ambiguous cardinality."""

    def __init__(self, batch):
        super().__init__()
        self._batch = batch

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return self._batch


class _Subject:
    """The layer under test, its inputs, and how to call and build it.

    `layer`, `model` and `outputs` are made on first use, inside whichever
    check first needs them, so that a failure there is blamed on that check.
    """

    def __init__(self, layer_class, init_kwargs, inputs, call_kwargs):
        self.layer_class = layer_class
        self.init_kwargs = init_kwargs
        self.call_kwargs = call_kwargs
        arguments = ", ".join(f"{k}={v!r}" for k, v in init_kwargs.items())
        call = ", ".join(f"{k}={v!r}" for k, v in call_kwargs.items())
        self.label = f"{layer_class.__name__}({arguments})" + (
            f" called with ({call})" if call else ""
        )
        if not isinstance(inputs, dict) or not inputs:
            raise ValueError(f"{self.label}: `inputs` must be a non-empty dict.")
        self.inputs = {k: np.asarray(v) for k, v in inputs.items()}
        parameters = inspect.signature(layer_class.call).parameters
        names = [p for p in parameters if p != "self"]
        catch_all = any(
            p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values()
        )
        if not names or names[0] not in self.inputs:
            raise ValueError(
                f"{self.label}: `inputs` must hold the first argument of "
                f"call(), {names[:1]}; received {sorted(self.inputs)}."
            )
        extra = set(self.inputs) | set(call_kwargs)
        extra -= set(names)
        if extra and not catch_all:
            raise ValueError(
                f"{self.label}: {sorted(extra)} are not arguments of call() "
                f"{names}."
            )
        self.first = names[0]
        self._cache = {}

    # Layers and calls --------------------------------------------------

    def make(self, **overrides):
        return self.layer_class(**{**self.init_kwargs, **overrides})

    def call(self, layer, tensors):
        """Calls `layer` the way users do: the first argument positionally,
        the other inputs and the call options by keyword."""
        others = {k: v for k, v in tensors.items() if k != self.first}
        return layer(tensors[self.first], **others, **self.call_kwargs)

    def eager(self, layer):
        return self.call(layer, self.inputs)

    def symbolic_inputs(self, known_batch=False):
        """One `keras.Input` per array, named after its call argument."""
        return {
            name: keras.Input(
                batch_shape=array.shape if known_batch else (None,) + array.shape[1:],
                dtype=str(array.dtype),
                name=name,
            )
            for name, array in self.inputs.items()
        }

    def functional_model(self, layer, feed=None):
        """A functional model calling `layer` on named inputs; `feed` maps
        the inputs to what the layer receives (e.g. through a Dense)."""
        symbolic = self.symbolic_inputs()
        tensors = feed(symbolic) if feed else symbolic
        return keras.Model(symbolic, self.call(layer, tensors))

    def shape_arguments(self, method, known_batch=False):
        """Arguments for `build` or `compute_output_shape`: the first input's
        shape for a one-argument method, else `<arg>_shape` by keyword."""

        def shape(name):
            array = self.inputs[name]
            return array.shape if known_batch else (None,) + array.shape[1:]

        parameters = [
            p.name
            for p in inspect.signature(method).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        if len(parameters) == 1:
            return (shape(self.first),), {}
        kwargs = {}
        for parameter in parameters:
            name = parameter.removesuffix("_shape")
            _expect(
                parameter.endswith("_shape") and name in self.inputs,
                f"{method.__name__}() takes `{parameter}`, which matches no "
                f"input `<arg>_shape` among {sorted(self.inputs)}.",
            )
            kwargs[parameter] = shape(name)
        return (), kwargs

    # The shared instance -------------------------------------------------

    def build_symbolically(self, layer):
        """Builds `layer` as a functional model would, without computing
        anything: cheaper than an eager call (which, for a GRU on JAX,
        compiles its scan again each time)."""
        self.call(layer, self.symbolic_inputs())
        return layer

    def _made(self):
        # One eager call serves every check that needs eager outputs.
        if not self._cache:
            layer = self.make()
            model = self.functional_model(layer)
            eager = self.eager(layer)
            self._cache.update(
                layer=layer,
                model=model,
                eager=eager,
                outputs=keras.tree.map_structure(_numpy, eager),
            )
        return self._cache

    @property
    def layer(self):
        return self._made()["layer"]

    @property
    def model(self):
        return self._made()["model"]

    @property
    def eager_outputs(self):
        """The eager outputs as the layer returned them (masks attached)."""
        return self._made()["eager"]

    @property
    def outputs(self):
        """The eager outputs as NumPy."""
        return self._made()["outputs"]


def _assert_close(actual, expected, atol, rtol, what):
    actual, expected = _flat(actual), _flat(expected)
    _expect(
        len(actual) == len(expected),
        f"{what}: {len(actual)} outputs against {len(expected)}.",
    )
    for k, (a, b) in enumerate(zip(actual, expected)):
        a, b = _numpy(a), _numpy(b)
        _expect(a.shape == b.shape, f"{what}, output {k}: shape {a.shape} != {b.shape}.")
        _assert_allclose(a, b, atol, rtol, f"{what}, output {k}")


def _assert_allclose(actual, expected, atol, rtol, what):
    try:
        np.testing.assert_allclose(
            np.asarray(actual, "float64"),
            np.asarray(expected, "float64"),
            atol=atol,
            rtol=rtol,
        )
    except AssertionError as error:
        # What differs first, then NumPy's account of by how much.
        raise AssertionError(f"{what}: {str(error).strip()}") from None


def _assert_mask(output, expected_mask, what):
    mask = get_keras_mask(_flat(output)[0])
    _expect(mask is not None, f"{what}: the output carries no Keras mask.")
    np.testing.assert_array_equal(
        _numpy(mask), np.asarray(expected_mask), err_msg=f"{what}: Keras mask"
    )


# --------------------------------------------------------------------------
# The checks


def _check_config(subject, unsaved_kwargs, atol, rtol):
    layer = subject.make()
    config = layer.get_config()
    try:
        json.dumps(config)
    except (TypeError, ValueError) as error:
        raise AssertionError(f"get_config() is not JSON-serialisable: {error}")
    for key, value in subject.init_kwargs.items():
        if key in _BASE_LAYER_KWARGS or key in unsaved_kwargs:
            continue
        _expect(
            key in config,
            f"constructor argument `{key}` is missing from get_config() "
            f"(keys: {sorted(config)}); a loaded layer would use its default.",
        )
        # Compared through JSON, as the config is saved: (1, 2) == [1, 2].
        saved = json.loads(json.dumps(config[key]))
        _expect(
            saved == json.loads(json.dumps(value)),
            f"get_config()[{key!r}] is {config[key]!r}, but the layer was "
            f"made with {value!r}.",
        )
    clone = subject.layer_class.from_config(config)
    _expect(
        clone.get_config() == config,
        "from_config(config).get_config() differs from config:\n"
        f"  {clone.get_config()}\n  {config}",
    )
    serialized = keras.saving.serialize_keras_object(layer)
    restored = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(serialized))
    )
    _expect(
        type(restored) is subject.layer_class,
        f"serialize/deserialize_keras_object returned {type(restored).__name__}: "
        "is the class registered (keras.saving.register_keras_serializable)?",
    )
    _expect(
        restored.get_config() == config,
        "the config changed through serialize/deserialize_keras_object.",
    )
    # The config must hold everything that changes the outputs: a clone with
    # the same weights computes the same thing. (Cloned from the shared
    # subject's config, whose eager outputs are computed once for all checks.)
    twin = subject.layer_class.from_config(subject.layer.get_config())
    subject.build_symbolically(twin)  # so that it can take the weights
    twin.set_weights(subject.layer.get_weights())
    _assert_close(
        subject.eager(twin),
        subject.outputs,
        atol,
        rtol,
        "from_config clone with the same weights",
    )


def _check_build(subject, expected_output_shape, n_trainable, n_non_trainable):
    layer = subject.make()
    args, kwargs = subject.shape_arguments(layer.build)
    layer.build(*args, **kwargs)
    _expect(layer.built, "layer.built is False after build().")
    if n_trainable is not None:
        _expect(
            len(layer.trainable_weights) == n_trainable,
            f"{len(layer.trainable_weights)} trainable weights after build(), "
            f"expected {n_trainable}: {[w.path for w in layer.trainable_weights]}",
        )
    if n_non_trainable is not None:
        _expect(
            len(layer.non_trainable_weights) == n_non_trainable,
            f"{len(layer.non_trainable_weights)} non-trainable weights after "
            f"build(), expected {n_non_trainable}.",
        )
    before = [w.path for w in layer.weights]
    outputs = subject.eager(layer)
    after = [w.path for w in layer.weights]
    _expect(
        after == before,
        "calling the built layer changed its weights (create them all in "
        f"build()): {before} -> {after}",
    )
    shapes = [tuple(x.shape) for x in _flat(outputs)]
    if expected_output_shape is not None:
        expected = expected_output_shape
        if not (expected and isinstance(expected[0], (tuple, list))):
            expected = [expected]
        _expect(
            shapes == [tuple(s) for s in expected],
            f"eager output shapes {shapes}, expected {list(expected)}.",
        )
    overridden = (
        type(layer).compute_output_shape is not keras.layers.Layer.compute_output_shape
    )
    if overridden and not subject.call_kwargs:
        args, kwargs = subject.shape_arguments(
            layer.compute_output_shape, known_batch=True
        )
        computed = layer.compute_output_shape(*args, **kwargs)
        if not (computed and isinstance(computed[0], (tuple, list))):
            computed = [computed]
        _expect(
            [tuple(s) for s in computed] == shapes,
            f"compute_output_shape() returns {list(computed)}, the eager "
            f"outputs have {shapes}.",
        )


def _check_symbolic(subject, supports_masking, expected_mask):
    layer = subject.make()
    if supports_masking is not None:
        _expect(
            layer.supports_masking == supports_masking,
            f"supports_masking is {layer.supports_masking}, expected "
            f"{supports_masking}.",
        )
    # Unknown batch axes are how functional models call the layer; known
    # ones catch a spec whose axes are swapped (I x C against C x I), which
    # two unknown axes would hide.
    calls = {
        "unknown": subject.call(layer, subject.symbolic_inputs(known_batch=False)),
        "known": subject.call(layer, subject.symbolic_inputs(known_batch=True)),
    }
    eager = _flat(subject.eager_outputs)
    for batch, specs in calls.items():
        where = f"the symbolic call (batch axes {batch})"
        specs = _flat(specs)
        _expect(
            len(specs) == len(eager),
            f"{where} returns {len(specs)} outputs, the eager call {len(eager)}.",
        )
        for k, (spec, value) in enumerate(zip(specs, eager)):
            _expect(
                isinstance(spec, keras.KerasTensor),
                f"output {k} of {where} is a {type(spec).__name__}, not a "
                "KerasTensor.",
            )
            dtype = keras.backend.standardize_dtype(value.dtype)
            _expect(
                keras.backend.standardize_dtype(spec.dtype) == dtype,
                f"output {k} of {where} has dtype {spec.dtype}, the eager "
                f"output {dtype}.",
            )
            shape, got = tuple(value.shape), tuple(spec.shape)
            compatible = len(got) == len(shape) and all(
                a == b or (a is None and batch == "unknown")
                for a, b in zip(got, shape)
            )
            _expect(
                compatible,
                f"output {k} of {where} has shape {got}, the eager output "
                f"{shape}.",
            )
        if expected_mask is not None:
            mask = get_keras_mask(specs[0])
            _expect(
                mask is not None,
                f"the first output of {where} carries no Keras mask.",
            )
            _expect(
                len(mask.shape) == np.ndim(expected_mask),
                f"the mask of {where} has shape {tuple(mask.shape)}, "
                f"expected {np.shape(expected_mask)}.",
            )


def _check_eager(subject, expected_mask, atol, rtol):
    eager = subject.eager_outputs
    if expected_mask is not None:
        _assert_mask(eager, expected_mask, "eager call")
    predicted = subject.model.predict(_OneBatch(subject.inputs), verbose=0)
    _assert_close(
        predicted,
        eager,
        atol,
        rtol,
        "Model.predict (compiled) against the eager call",
    )


def _check_training(subject, prepend_dense, loss):
    if prepend_dense is None:
        # Whether the layer alone has anything to train.
        probe = subject.build_symbolically(subject.make())
        prepend_dense = not probe.trainable_weights

    def feed(symbolic):
        if not prepend_dense:
            return symbolic
        return {
            name: keras.layers.Dense(array.shape[-1], name=f"dense_{name}")(
                symbolic[name]
            )
            if _is_float(array.dtype)
            else symbolic[name]
            for name, array in subject.inputs.items()
        }

    layer = subject.make()
    model = subject.functional_model(layer, feed)
    _expect(
        model.trainable_weights,
        "the training model has no trainable weights (no float input for a "
        "Dense either); skip this check for such a layer.",
    )
    # Random targets of the outputs' shapes: a loss far from its minimum,
    # so that every weight receives a gradient.
    rng = np.random.default_rng(0)
    outputs = _flat(subject.outputs)  # a Dense before keeps the shapes
    targets = [
        rng.normal(size=tuple(x.shape)).astype("float32") for x in outputs
    ]
    losses = [loss] * len(targets) if len(targets) > 1 else loss
    model.compile(optimizer="sgd", loss=losses)
    before = [_numpy(w).copy() for w in model.trainable_weights]
    y = tuple(targets) if len(targets) > 1 else targets[0]
    history = model.fit(_OneBatch((subject.inputs, y)), epochs=1, verbose=0)
    value = history.history["loss"][-1]
    _expect(np.isfinite(value), f"the training loss is {value}.")
    unchanged = [
        w.path
        for w, old in zip(model.trainable_weights, before)
        if np.array_equal(_numpy(w), old)
    ]
    _expect(
        not unchanged,
        f"one SGD step left trainable weights unchanged (no gradient "
        f"reaches them): {unchanged}",
    )


def _check_mixed_precision(subject, policy, tolerance):
    full, expected = subject.layer, subject.outputs
    half = subject.make(dtype=policy)
    # The symbolic call builds it, so that it can take float32's weights.
    specs = subject.call(half, subject.symbolic_inputs())
    half.set_weights(full.get_weights())
    outputs = subject.eager(half)
    compute = keras.backend.standardize_dtype(half.compute_dtype)
    _expect(
        compute != "float32",
        f"dtype={policy!r} left the compute dtype at float32.",
    )
    if tolerance is None:
        tolerance = MIXED_PRECISION_ATOL[compute]
    specs, outputs, expected = _flat(specs), _flat(outputs), _flat(expected)
    _expect(
        len(specs) == len(outputs) == len(expected),
        f"{len(specs)} symbolic, {len(outputs)} eager outputs under "
        f"{policy!r}, {len(expected)} in float32.",
    )
    for k, (spec, output, reference) in enumerate(zip(specs, outputs, expected)):
        if not _is_float(reference.dtype):
            continue
        for tensor, what in ((spec, "symbolic"), (output, "eager")):
            dtype = keras.backend.standardize_dtype(tensor.dtype)
            _expect(
                dtype == compute,
                f"{what} output {k} under {policy!r} is {dtype}, not the "
                f"compute dtype {compute}.",
            )
        values = _numpy(ops.cast(output, "float32"))
        _expect(
            np.all(np.isfinite(values)),
            f"output {k} under {policy!r} holds NaN or infinity.",
        )
        _assert_allclose(
            values,
            _numpy(reference),
            tolerance,
            0.0,
            f"output {k} under {policy!r} against float32",
        )


def _check_saving(subject, tmp_dir):
    layer, model = subject.layer, subject.model
    expected = model(subject.inputs)
    with contextlib.ExitStack() as stack:
        folder = tmp_dir or stack.enter_context(tempfile.TemporaryDirectory())
        path = os.path.join(str(folder), f"{subject.layer_class.__name__}.keras")
        model.save(path)
        restored = keras.saving.load_model(path)
    loaded = restored.get_layer(layer.name)
    _expect(
        type(loaded) is subject.layer_class,
        f"the loaded model holds a {type(loaded).__name__}, not a "
        f"{subject.layer_class.__name__}.",
    )
    _expect(
        loaded.get_config() == layer.get_config(),
        "the loaded layer's config differs:\n"
        f"  {loaded.get_config()}\n  {layer.get_config()}",
    )
    _assert_close(
        restored(subject.inputs),
        expected,
        1e-6,
        0.0,
        "the model loaded from .keras against the saved one",
    )
