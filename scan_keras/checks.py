"""Argument checks, one home for each: clear errors naming the argument.

Pure Python (no Keras), so every part of the package can use them: the
layers, the data readers, training and the command line.
"""

import numbers


def check_choice(name, value, choices):
    """Raises a ValueError naming `name` unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(
            f"Unknown {name}: expected one of {tuple(choices)}. "
            f"Received: {name}={value!r}"
        )


def is_int(value):
    """Whether `value` is an integer (Python or NumPy), and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name, value, minimum):
    """Raises a ValueError naming `name` unless `value` is an integer of at
    least `minimum`."""
    if not is_int(value) or value < minimum:
        raise ValueError(
            f"Expected `{name}` to be an integer of at least {minimum}. "
            f"Received: {name}={value!r}"
        )


def check_positive_int(name, value, allow_none=False):
    """Raises a ValueError unless `value` is an integer >= 1 (or None when
    `allow_none`). Booleans are refused: `True` is no count."""
    if value is None and allow_none:
        return
    if not is_int(value) or value < 1:
        expected = "a positive integer or None" if allow_none else "a positive integer"
        raise ValueError(f"Expected `{name}` to be {expected}. Received: {name}={value!r}")


def check_positive_number(name, value, allow_none=False):
    """Raises a ValueError unless `value` is a finite real number > 0 (or
    None when `allow_none`). Booleans are refused: `True` is no temperature."""
    if value is None and allow_none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0 < value < float("inf")
    ):
        expected = "a positive number or None" if allow_none else "a positive number"
        raise ValueError(f"Expected `{name}` to be {expected}. Received: {name}={value!r}")


def check_number_at_least(name, value, minimum):
    """Raises a ValueError unless `value` is a finite real number of at least
    `minimum`. Booleans are refused."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not minimum <= value < float("inf")
    ):
        raise ValueError(
            f"Expected `{name}` to be a number of at least {minimum}. "
            f"Received: {name}={value!r}"
        )
