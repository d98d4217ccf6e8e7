"""TorchAdam against torch.optim.Adam + clip_grad_norm_, and against a float64
transcription of the update rule (reference.adam_step)."""

import keras
import numpy as np
import pytest
from keras import ops

import reference
from scan_keras.optimizers import TorchAdam, get_optimizer

SHAPES = [(6, 4), (5,), (3, 3, 2)]
# Gradient scales of each step, from 1e-12 to 1e2; step 3 is clipped hard
# (norm about 1e2 against 2.0), the others are below the clip norm.
STEP_SCALES = [1e-3, 1e-12, 1e2, 1e-6, 1.0, 1e-2]


def _gradients(rng, scale):
    grads = []
    for shape in SHAPES:
        g = rng.normal(size=shape) * scale * 10.0 ** rng.uniform(-2, 0, size=shape)
        grads.append(g.astype("float32"))
    # The first rows of the first weight never get a gradient (the
    # embedding of a word that no batch holds): they must not move.
    grads[0][:2] = 0.0
    return grads


def _run_keras(optimizer, weights, steps):
    variables = [keras.Variable(w) for w in weights]
    for grads in steps:
        optimizer.apply([ops.convert_to_tensor(g) for g in grads], variables)
    return [ops.convert_to_numpy(v) for v in variables]


def _run_reference(weights, steps, lr, grad_clip, legacy_epsilon=False):
    weights = [np.asarray(w, np.float64) for w in weights]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    for t, grads in enumerate(steps, start=1):
        if grad_clip is not None:
            grads = reference.clip_grad_norm(grads, grad_clip)
        for k in range(len(weights)):
            weights[k], m[k], v[k] = reference.adam_step(
                weights[k], grads[k], m[k], v[k], t, lr, legacy_epsilon=legacy_epsilon
            )
    return weights


def _relative_update_error(start, actual, expected):
    """|actual - expected| / |expected - start| over all weights together."""
    diff = sum(np.sum((np.float64(a) - e) ** 2) for a, e in zip(actual, expected))
    update = sum(np.sum((e - np.float64(s)) ** 2) for s, e in zip(start, expected))
    return float(np.sqrt(diff / update))


def _problem(seed=0):
    # Weights of the size of a few updates: float32's rounding of the
    # weights then costs far less than the 1e-5 asked of the update.
    rng = np.random.default_rng(seed)
    weights = [(1e-3 * rng.normal(size=s)).astype("float32") for s in SHAPES]
    steps = [_gradients(rng, scale) for scale in STEP_SCALES]
    return weights, steps


@pytest.mark.slow
@pytest.mark.parametrize("grad_clip", [2.0, None])
def test_matches_torch_adam_with_clip_grad_norm(grad_clip):
    torch = pytest.importorskip("torch")
    weights, steps = _problem()
    lr = 1e-3
    params = [torch.nn.Parameter(torch.tensor(w)) for w in weights]
    torch_adam = torch.optim.Adam(params, lr=lr)
    for k, grads in enumerate(steps):
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g)
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        torch_adam.step()
        expected = [p.detach().numpy().astype(np.float64) for p in params]
        actual = _run_keras(TorchAdam(lr, grad_clip=grad_clip), weights, steps[: k + 1])
        error = _relative_update_error(weights, actual, expected)
        assert error <= 1e-5, f"step {k + 1}: relative update error {error:.2e}"
        np.testing.assert_array_equal(actual[0][:2], weights[0][:2])


@pytest.mark.parametrize("legacy_epsilon", [False, True])
@pytest.mark.parametrize("grad_clip", [2.0, None])
def test_matches_the_float64_update_rule(legacy_epsilon, grad_clip):
    weights, steps = _problem(seed=1)
    lr = 1e-3
    actual = _run_keras(
        TorchAdam(lr, grad_clip=grad_clip, legacy_epsilon=legacy_epsilon), weights, steps
    )
    expected = _run_reference(weights, steps, lr, grad_clip, legacy_epsilon)
    assert _relative_update_error(weights, actual, expected) <= 1e-5
    np.testing.assert_array_equal(actual[0][:2], weights[0][:2])


def test_the_clip_is_applied_only_above_the_norm():
    # One step of norm 50 clipped to 2, one of norm 1 left alone; a large
    # epsilon makes the update depend on the gradient's size, not its sign.
    variable = keras.Variable(np.zeros(2, "float32"))
    optimizer = TorchAdam(1.0, beta_1=0.0, beta_2=0.0, epsilon=1e6, grad_clip=2.0)
    optimizer.apply([ops.convert_to_tensor([30.0, 40.0])], [variable])
    np.testing.assert_allclose(
        ops.convert_to_numpy(variable), -np.array([1.2, 1.6]) / 1e6, rtol=1e-5
    )
    optimizer.apply([ops.convert_to_tensor([0.6, 0.8])], [variable])
    np.testing.assert_allclose(
        ops.convert_to_numpy(variable), -np.array([1.8, 2.4]) / 1e6, rtol=1e-5
    )


def test_keras_adam_takes_other_steps():
    # What the recipe used before: epsilon before the bias correction, 1e-7.
    weights, steps = _problem()
    expected = _run_reference(weights, steps[:2], 1e-3, 2.0)
    keras_adam = _run_keras(get_optimizer("keras_adam", 1e-3, 2.0), weights, steps[:2])
    torch_adam = _run_keras(get_optimizer("torch_adam", 1e-3, 2.0), weights, steps[:2])
    assert _relative_update_error(weights, torch_adam, expected) <= 1e-5
    assert _relative_update_error(weights, keras_adam, expected) > 1e-2


def test_config_round_trip_and_saved_state(tmp_path):
    optimizer = TorchAdam(3e-4, beta_2=0.99, grad_clip=1.5, legacy_epsilon=True)
    config = optimizer.get_config()
    restored = TorchAdam.from_config(config)
    for key in ("beta_1", "beta_2", "epsilon", "grad_clip", "legacy_epsilon"):
        assert getattr(restored, key) == getattr(optimizer, key)
    assert isinstance(keras.optimizers.deserialize(keras.optimizers.serialize(optimizer)), TorchAdam)

    # A compiled model saved mid-training resumes with the same moments.
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer=TorchAdam(1e-2, grad_clip=2.0), loss="mse")
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    y = np.ones((8, 2), "float32")
    model.fit(x, y, epochs=2, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer, TorchAdam)
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations)
    model.fit(x, y, epochs=1, verbose=0)
    loaded.fit(x, y, epochs=1, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(grad_clip=-1.0), "grad_clip"),
        (dict(grad_clip=0), "grad_clip"),
        (dict(grad_clip=float("nan")), "grad_clip"),
        (dict(beta_1=1.0), "beta_1"),
        (dict(epsilon=-1e-8), "epsilon"),
        (dict(global_clipnorm=2.0), "global_clipnorm"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TorchAdam(**kwargs)


def test_unknown_optimizer_name():
    with pytest.raises(ValueError, match="torch_adam.*Received: 'adamw'"):
        get_optimizer("adamw")
    with pytest.raises(ValueError, match="grad_clip"):
        get_optimizer("keras_adam", grad_clip=-2.0)


def test_a_word_seen_twice_counts_once_in_the_norm():
    # Token 1 is looked up twice: its embedding's gradient is [2, 2] (on
    # TensorFlow two slices of [1, 1]). The global norm is sqrt(8), not 2.
    model = keras.Sequential(
        [
            keras.Input((2,), dtype="int32"),
            keras.layers.Embedding(3, 2, embeddings_initializer="zeros"),
            keras.layers.Flatten(),
            keras.layers.Dense(1, use_bias=False, kernel_initializer="ones", trainable=False),
        ]
    )
    model.compile(
        optimizer=TorchAdam(1.0, beta_1=0.0, beta_2=0.0, epsilon=1e6, grad_clip=1.0),
        loss="mean_absolute_error",
    )
    model.train_on_batch(np.array([[1, 1]]), np.array([[100.0]]))
    row = ops.convert_to_numpy(model.layers[0].embeddings)[1]
    np.testing.assert_allclose(row, np.full(2, np.sqrt(0.5)) / 1e6, rtol=1e-5)


@pytest.mark.slow
def test_a_trained_model_loads_in_a_fresh_process(tmp_path):
    # The saved model holds its compiled TorchAdam: `import scan_keras`
    # must register it, or a new process cannot load the file.
    import subprocess
    import sys

    from scan_keras.models import SCAN
    from scan_keras.training import compile_scan

    model = SCAN(vocab_size=20, img_dim=8, embed_size=16, word_dim=8)
    model.build()
    compile_scan(model)
    rng = np.random.default_rng(0)
    batch = {"features": rng.random((8, 5, 8), dtype=np.float32),
             "token_ids": rng.integers(1, 20, size=(8, 6))}
    model.fit(batch, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    code = (
        "import keras, scan_keras; "
        f"m = keras.saving.load_model({path!r}); "
        "print(type(m.optimizer).__name__, int(m.optimizer.iterations))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["TorchAdam", "1"]
