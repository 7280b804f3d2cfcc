"""Argument and input checks shared by the layers, losses, optimizers and training step.

Every check raises at construction or trace time with a message of the project's form
``"<layer or function>: <what was expected>, got <what came>."``: a TypeError for an argument
of the wrong type (a string, a bool where a number is meant), a ValueError for a value out of
range. Booleans are never numbers here (``True`` is not a size of 1 nor a rate of 1).
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify


def _is_bool(value) -> bool:
    return isinstance(value, (bool, np.bool_))


def real_number(owner: str, what: str, value) -> float:
    """``value`` as a float if it is a real number (not a bool, not a string); else TypeError."""
    if isinstance(value, numbers.Real) and not _is_bool(value):
        return float(value)
    dtype = getattr(value, "dtype", None)
    if (dtype is not None and np.ndim(value) == 0 and not isinstance(value, jax.core.Tracer)
            and jnp.issubdtype(dtype, jnp.number) and not jnp.issubdtype(dtype, jnp.complexfloating)):
        return float(value)
    raise TypeError(f"{owner}: {what} must be a real number, got {value!r} of type {type(value).__name__}.")


def positive_finite(owner: str, what: str, value, *, alternative: str = "") -> float:
    """``value`` as a float if it is a finite real number > 0 (TypeError / ValueError otherwise)."""
    number = real_number(owner, what, value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{owner}: {what} must be a finite number > 0{alternative}, got {value!r}.")
    return number


def in_interval(owner: str, what: str, value, low: float, high: float, *, include_high: bool = False) -> float:
    """``value`` as a float if it is a real number in [low, high) (or [low, high])."""
    number = real_number(owner, what, value)
    inside = low <= number <= high if include_high else low <= number < high
    if not inside:
        raise ValueError(f"{owner}: {what} must be in [{low:g}, {high:g}{']' if include_high else ')'}, got {value!r}.")
    return number


def learning_rate(owner: str, value):
    """A schedule (any callable) as is, or a finite positive number (not a bool)."""
    if callable(value):
        return value
    positive_finite(owner, "learning_rate", value, alternative=" or a schedule")
    return value


def positive_int(owner: str, what: str, value) -> int:
    """``value`` as an int if it is an integer >= 1 (Python or NumPy, not a bool); else ValueError.

    A ValueError (not a TypeError) for every bad size, the layers' long-standing convention.
    """
    if isinstance(value, numbers.Integral) and not _is_bool(value) and value >= 1:
        return int(value)
    raise ValueError(f"{owner}: {what} must be a positive int, got {value!r}.")


def floating_dtype(owner: str, dtype) -> jnp.dtype:
    """``dtype`` as a `jnp.dtype` if it is a floating-point dtype; else TypeError."""
    try:
        resolved = jnp.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or not jnp.issubdtype(resolved, jnp.floating):
        raise TypeError(f"{owner}: dtype must be a floating-point dtype (e.g. jnp.float32), got {dtype!r}.")
    return resolved


def nonempty_training_batch(layer, x, train: bool, *, axes: int = 1, what: str = "batch") -> None:
    """In training, refuses an input whose first ``axes`` axes (the ``what``) hold no element.

    Checked at trace time. A training step over an empty batch has no loss to average and
    breaks the layers' gradients; evaluation returns an empty output instead, so this checks
    only ``train=True``.
    """
    if train and any(size == 0 for size in x.shape[:axes]):
        raise ValueError(
            f"{layer!r}: expected a non-empty {what} in training, got input of shape {tuple(x.shape)}."
        )


def check_labels(labels, num_classes: int, where: str) -> None:
    """Checks that integer class labels lie in [0, num_classes).

    Concrete labels (not tracers) are checked on the host: a ValueError names ``where``, the
    class count and the offending values. Traced labels (under `jax.jit`, `jax.vmap`, ...) get a
    `jax.experimental.checkify` check instead, a no-op unless the caller is checkified
    (``checkify.checkify(jax.jit(loss))(p, labels)`` returns the error); it adds nothing to the
    compiled program otherwise.
    """
    expected = f"{where}: labels must be class indices in [0, {num_classes}) for {num_classes} classes"
    if isinstance(labels, jax.core.Tracer):
        bad = (labels < 0) | (labels >= num_classes)
        first_bad = jnp.ravel(labels)[jnp.argmax(jnp.ravel(bad))] if labels.size else jnp.zeros((), labels.dtype)
        checkify.check(~jnp.any(bad), expected + ", got label {label}.", label=first_bad, debug=True)
        return
    values = np.asarray(labels)
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size:
        shown = np.unique(bad)
        listed = ", ".join(map(str, shown[:10].tolist())) + (", ..." if shown.size > 10 else "")
        raise ValueError(f"{expected}, got {bad.size} label(s) outside it: {listed}.")
