"""The optimizer of the reference code: Adam as PyTorch steps it, clipped.

The reference code trains with `torch.optim.Adam` (default betas, eps
1e-8) after `torch.nn.utils.clip_grad_norm_(params, 2.0)` over all the
weights together. `TorchAdam` takes exactly those steps, on every Keras
backend. Keras' own `keras.optimizers.Adam` differs in two places:

| | `torch.optim.Adam` (and `TorchAdam`) | `keras.optimizers.Adam` |
| --- | --- | --- |
| epsilon | added after the bias correction: m_hat / (sqrt(v_hat) + eps) | added before it ("epsilon hat"): the effective eps is eps / sqrt(1 - beta_2^t) |
| default eps | 1e-8 | 1e-7 |
| global-norm clipping | g * max_norm / (norm + 1e-6), only when that factor is below 1 | g * max_norm / max(norm, max_norm) |

At the first step Keras' effective epsilon is about 300 times torch's, and
10 times for the rest of a run. PyTorch itself placed epsilon like Keras
until 2019 (pytorch/pytorch#22628), which includes the 0.3 that the
reference code's README names; `legacy_epsilon=True` takes those steps.

The update of a weight w with gradient g at step t (1-based), after the
clipping of all gradients together:

    m = beta_1 m + (1 - beta_1) g
    v = beta_2 v + (1 - beta_2) g^2
    w = w - lr / (1 - beta_1^t) * m / (sqrt(v) / sqrt(1 - beta_2^t) + eps)

A weight whose gradient has always been zero (the embedding of a word not
yet seen in a batch) does not move: its m is zero.
"""

import math

import keras
from keras import ops

from scan_keras.checks import check_positive_number

# clip_grad_norm_ divides by (total_norm + 1e-6).
CLIP_EPSILON = 1e-6
OPTIMIZERS = ("torch_adam", "torch_adam_legacy", "keras_adam")


def _check_beta(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(
            f"Expected `{name}` in [0, 1). Received: {name}={value!r}"
        )


def check_grad_clip(grad_clip):
    """Raises ValueError unless `grad_clip` is None or a positive number."""
    # The largest global norm of the gradients; None for no clipping.
    check_positive_number("grad_clip", grad_clip, allow_none=True)


def _dense(gradient):
    """The gradient as a dense tensor.

    On TensorFlow an embedding's gradient arrives as `tf.IndexedSlices`,
    one slice per looked-up id; squared slice by slice (as Keras' own
    `global_clipnorm` squares it), a word that a batch holds twice counts
    a^2 + b^2 instead of (a + b)^2, and the global norm comes out wrong.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if isinstance(gradient, tf.IndexedSlices):
            return tf.convert_to_tensor(gradient)
    return gradient


@keras.saving.register_keras_serializable(package="scan_keras")
class TorchAdam(keras.optimizers.Optimizer):
    """Adam as `torch.optim.Adam` steps it, with `clip_grad_norm_`'s clipping.

    The optimizer of the reference code, as a Keras optimizer for every
    backend (see the module docstring for the update rule and how it
    differs from `keras.optimizers.Adam`). No weight decay, no AMSGrad,
    as the reference code.

    Args:
        learning_rate: a float or a `keras.optimizers.schedules` schedule.
        beta_1: decay of the first moment (torch's `betas[0]`).
        beta_2: decay of the second moment (torch's `betas[1]`).
        epsilon: added to the bias-corrected sqrt(v) (torch's `eps`).
        grad_clip: clip the gradients of all weights together to this
            global norm, as `torch.nn.utils.clip_grad_norm_` does; None
            for no clipping.
        legacy_epsilon: place epsilon as PyTorch did before 2019 (and as
            Keras' Adam does): added to sqrt(v) before the bias correction.
        name: the optimizer's name.
        **kwargs: other `keras.optimizers.Optimizer` arguments, except the
            clipping ones (`clipnorm`, `clipvalue`, `global_clipnorm`),
            which `grad_clip` replaces.

    Example:

    ```python
    import keras
    import numpy as np
    from scan_keras.optimizers import TorchAdam

    w = keras.Variable(np.array([1.0, -2.0], "float32"))
    optimizer = TorchAdam(learning_rate=0.1, grad_clip=2.0)
    optimizer.apply([keras.ops.convert_to_tensor([30.0, 40.0])], [w])
    # the gradient's norm 50 is clipped to 2; Adam's first step moves each
    # weight by lr against its gradient's sign: w is about [0.9, -2.1]
    ```
    """

    def __init__(
        self,
        learning_rate=2e-4,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        grad_clip=None,
        legacy_epsilon=False,
        name="torch_adam",
        **kwargs,
    ):
        _check_beta("beta_1", beta_1)
        _check_beta("beta_2", beta_2)
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon >= 0:
            raise ValueError(
                f"Expected `epsilon` to be a number >= 0. Received: epsilon={epsilon!r}"
            )
        check_grad_clip(grad_clip)
        clipping = sorted(
            k for k in ("clipnorm", "clipvalue", "global_clipnorm") if kwargs.get(k)
        )
        if clipping:
            raise ValueError(
                "TorchAdam clips as the reference code does through "
                f"`grad_clip`; it does not take {clipping}. "
                f"Received: {', '.join(f'{k}={kwargs[k]!r}' for k in clipping)}"
            )
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        self.legacy_epsilon = bool(legacy_epsilon)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._momentums, self._velocities = self.add_optimizer_variables(
            variables, ["momentum", "velocity"]
        )

    def _clip_gradients(self, grads):
        grads = [None if g is None else _dense(g) for g in grads]
        if self.grad_clip is None:
            return grads
        present = [g for g in grads if g is not None]
        total_norm = ops.sqrt(
            sum(ops.sum(ops.square(ops.cast(g, "float32"))) for g in present)
        )
        factor = ops.minimum(ops.divide(self.grad_clip, total_norm + CLIP_EPSILON), 1.0)
        return [g if g is None else g * ops.cast(factor, g.dtype) for g in grads]

    def _bias_correction(self, beta, step):
        # 1 - beta^t as -expm1(t log beta): in float32, 1 - 0.999 is off by
        # 1.3e-5 (relative), PyTorch computes it in float64.
        if beta == 0:
            return ops.ones_like(step)
        return -ops.expm1(step * math.log(beta))

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        correction_1 = self._bias_correction(self.beta_1, step)
        correction_2 = ops.sqrt(self._bias_correction(self.beta_2, step))

        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        self.assign(m, m + (gradient - m) * (1.0 - self.beta_1))
        self.assign(v, v * self.beta_2 + ops.square(gradient) * (1.0 - self.beta_2))
        if self.legacy_epsilon:
            step_size = lr * correction_2 / correction_1
            denominator = ops.sqrt(v) + self.epsilon
        else:
            step_size = lr / correction_1
            denominator = ops.sqrt(v) / correction_2 + self.epsilon
        self.assign_sub(variable, step_size * m / denominator)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "grad_clip": self.grad_clip,
                "legacy_epsilon": self.legacy_epsilon,
            }
        )
        return config


def get_optimizer(name="torch_adam", learning_rate=2e-4, grad_clip=2.0):
    """The optimizer of a training recipe, by name.

    Args:
        name: `"torch_adam"` (the reference code's steps, the default),
            `"torch_adam_legacy"` (the same with epsilon placed as PyTorch
            did before 2019), or `"keras_adam"` (`keras.optimizers.Adam`
            with its defaults and `global_clipnorm`: see the module
            docstring for what differs).
        learning_rate: a float or a schedule.
        grad_clip: the largest global norm of the gradients, or None.

    Returns:
        A Keras optimizer.
    """
    check_grad_clip(grad_clip)
    if name == "keras_adam":
        return keras.optimizers.Adam(
            learning_rate=learning_rate, global_clipnorm=grad_clip
        )
    if name in ("torch_adam", "torch_adam_legacy"):
        return TorchAdam(
            learning_rate=learning_rate,
            grad_clip=grad_clip,
            legacy_epsilon=name == "torch_adam_legacy",
        )
    raise ValueError(
        f"Unknown optimizer: expected one of {list(OPTIMIZERS)}. "
        f"Received: {name!r}"
    )
