"""PyTorch checkpoints read without running code stored in them.

`torch.load(weights_only=True)` builds tensors and plain containers only;
the one other type allowed is `argparse.Namespace`, which holds the
reference code's options. A file that needs anything more is refused with
the names it asked for, and every tensor is checked against the shapes the
options imply before it is used.
"""

import argparse
import contextlib
import pickle
import re

import numpy as np

# The only non-tensor, non-container type a reference checkpoint holds.
_SAFE_GLOBALS = (argparse.Namespace,)

_INSTALL_HINT = (
    'install it with `pip install "scan-keras[convert]"` (or `pip install '
    'torch`); it is needed only to read the file, the converted model runs '
    "on any Keras backend"
)


def import_torch():
    """PyTorch, new enough to load with an allow-list, or a clear ImportError."""
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            f"Reading a PyTorch checkpoint needs PyTorch: {_INSTALL_HINT}."
        ) from err
    serialization = torch.serialization
    if not (
        hasattr(serialization, "safe_globals")
        or hasattr(serialization, "add_safe_globals")
    ):
        raise ImportError(
            "Reading a PyTorch checkpoint safely needs torch>=2.4 (for "
            f"`weights_only` allow-lists). Received: torch {torch.__version__}; "
            f"{_INSTALL_HINT}."
        )
    return torch


def _allowing(torch, safe_globals):
    """A context in which `torch.load(weights_only=True)` accepts `safe_globals`."""
    serialization = torch.serialization
    if hasattr(serialization, "safe_globals"):
        return serialization.safe_globals(list(safe_globals))
    # torch 2.4 has only the process-wide allow-list. Adding Namespace to
    # it is harmless: building one runs no code of the file's choosing.
    serialization.add_safe_globals(list(safe_globals))
    return contextlib.nullcontext()


def _blocked_globals(torch, path, error):
    """The names of the globals `torch.load` refused, as well as can be told."""
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in _SAFE_GLOBALS}
    names = set(re.findall(r"GLOBAL ([\w.]+)", str(error)))
    # Newer torch can list every global of a file without unpickling it.
    scan = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if scan is not None:
        try:
            names.update(scan(path))
        except Exception:  # legacy (non-zip) files cannot be scanned
            pass
    return sorted(name.rstrip(".") for name in names - allowed)


def _refusal_reason(message):
    """What torch's weights-only loader objected to, without its advice."""
    # The advice (re-run with weights_only=False, file an issue) is
    # boilerplate around one line of substance, whose place varies.
    detail = message.split("WeightsUnpickler error:", 1)[-1]
    lines = [
        line.strip()
        for line in detail.splitlines()
        if line.strip() and "weights_only" not in line and "torch.load" not in line
    ]
    return lines[0] if lines else "content it does not support"


def load_safely(torch, path):
    """`torch.load` of `path` on the CPU, weights only; ValueError naming the
    file and what was refused."""
    try:
        with _allowing(torch, _SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        blocked = _blocked_globals(torch, path, err)
        if blocked:
            raise ValueError(
                f"Refusing to load {path}: unpickling it needs "
                f"{', '.join(blocked)}, which is not allowed. A checkpoint of "
                "the reference SCAN code holds only tensors, plain containers "
                "and argparse.Namespace; anything else could run arbitrary "
                "code while loading, and scan-keras never loads unsafely."
            ) from None
        message = str(err)
        if "Weights only load failed" in message:
            raise ValueError(
                f"Refusing to load {path}: PyTorch's safe (weights-only) "
                f"loader cannot read it ({_refusal_reason(message)}), and "
                "scan-keras never loads unsafely. Is it a torch.save file?"
            ) from None
        raise ValueError(
            f"{path} is not a readable PyTorch checkpoint ({message})."
        ) from None
    except Exception as err:  # not a torch.save file, truncated, ...
        # One line: the command line prints it as a single error line.
        detail = " ".join(f"{type(err).__name__}: {err}".split()).rstrip(":")
        raise ValueError(
            f"{path} is not a readable PyTorch checkpoint ({detail})."
        ) from None


def read_state(torch, state, expected, which, settings, path):
    """NumPy float32 copies of `state`'s tensors, checked against `expected`."""
    if not isinstance(state, dict):
        raise ValueError(
            f"{path}: expected the {which} state dict to be a dict. "
            f"Received: {type(state).__name__}"
        )
    for key in expected:
        if key not in state:
            raise ValueError(
                f"{path}: the {which} state dict lacks {key!r}, which its "
                f"options ({settings}) imply."
            )
    for key in state:
        if key not in expected:
            raise ValueError(
                f"{path}: unexpected key {key!r} in the {which} state dict "
                f"for its options ({settings})."
            )
    arrays = {}
    for key, shape in expected.items():
        tensor = state[key]
        if not torch.is_tensor(tensor) or not tensor.is_floating_point():
            raise ValueError(
                f"{path}: expected {key!r} of the {which} state dict to be a "
                f"floating-point tensor. Received: {type(tensor).__name__}"
                + (f" of dtype {tensor.dtype}" if torch.is_tensor(tensor) else "")
            )
        actual = tuple(tensor.shape)
        # A scalar may have been saved as a one-element tensor.
        fits = actual == shape or (shape == () and tensor.numel() == 1)
        if not fits:
            raise ValueError(
                f"{path}: {key!r} of the {which} state dict has shape "
                f"{actual}, but its options ({settings}) imply {shape}."
            )
        array = tensor.detach().to(torch.float32).cpu().numpy()
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise ValueError(
                f"{path}: {key!r} of the {which} state dict holds {bad} "
                "values that are NaN or infinite (a run that diverged?): such "
                "a model scores nothing. Convert a checkpoint of an earlier epoch."
            )
        arrays[key] = array
    return arrays
