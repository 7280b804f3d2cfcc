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
    """``value`` as an int if it is an integer >= 1 (Python or NumPy, not a bool).

    Raises:
        TypeError: for a value that is not an integer (a bool, a float, a string...).
        ValueError: for an integer < 1.
    """
    if not isinstance(value, numbers.Integral) or _is_bool(value):
        raise TypeError(f"{owner}: {what} must be a positive int, got {value!r} of type {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"{owner}: {what} must be a positive int, got {value!r}.")
    return int(value)


def nonnegative_int(owner: str, what: str, value) -> int:
    """``value`` as an int if it is an integer >= 0 (Python or NumPy, not a bool): a count
    that may be zero, a seed, an index.

    Raises:
        TypeError: for a value that is not an integer (a bool, a float, a string...).
        ValueError: for an integer < 0.
    """
    if not isinstance(value, numbers.Integral) or _is_bool(value):
        raise TypeError(f"{owner}: {what} must be an int >= 0, got {value!r} of type {type(value).__name__}.")
    if value < 0:
        raise ValueError(f"{owner}: {what} must be an int >= 0, got {value!r}.")
    return int(value)


def floating_dtype(owner: str, dtype) -> jnp.dtype:
    """``dtype`` as a `jnp.dtype` if it is a floating-point dtype; else TypeError."""
    try:
        resolved = jnp.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or not jnp.issubdtype(resolved, jnp.floating):
        raise TypeError(f"{owner}: dtype must be a floating-point dtype (e.g. jnp.float32), got {dtype!r}.")
    check_dtype_available(owner, "dtype", resolved)
    return resolved


def check_dtype_available(owner: str, what: str, dtype) -> None:
    """Raises a ValueError when ``dtype`` is float64 and JAX's 64-bit mode is off.

    Without ``jax_enable_x64`` JAX makes every float64 array float32, silently: a float64
    computation asked for would run in float32.

    Raises:
        ValueError: naming ``owner`` and ``what``, saying how to enable the 64-bit mode.
    """
    if dtype is None or jnp.dtype(dtype) != jnp.float64 or x64_enabled():
        return
    raise ValueError(
        f"{owner}: {what} 'float64' needs JAX's 64-bit mode, which is off (float64 arrays would silently be "
        f"float32): enable it first with jax.config.update('jax_enable_x64', True) (or the environment variable "
        f"JAX_ENABLE_X64=1), or ask for 'float32'.")


def x64_enabled() -> bool:
    """Whether JAX keeps float64 arrays float64 (``jax_enable_x64``, in this thread)."""
    return jax.dtypes.canonicalize_dtype(jnp.float64) == jnp.float64


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
    compiled program otherwise. One class (a one-column output) is a binary classifier: its
    labels are 0 or 1 (`check_binary_labels`).

    Raises:
        ValueError: for concrete labels outside [0, num_classes).
    """
    if num_classes == 1:
        check_binary_labels(labels, where)
        return
    expected = f"{where}: labels must be class indices in [0, {num_classes}) for {num_classes} classes"
    if isinstance(labels, jax.core.Tracer):
        bad = (labels < 0) | (labels >= num_classes)
        first_bad = _first_where(labels, bad)
        checkify.check(~jnp.any(bad), expected + ", got label {label}.", label=first_bad, debug=True)
        return
    values = host_values(labels)
    if not values.size or (values.min() >= 0 and values.max() < num_classes):  # the fast path: two reductions
        return
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size:
        raise ValueError(f"{expected}, got {bad.size} label(s) outside it: {_listed(bad)}.")

def check_binary_labels(labels, where: str) -> None:
    """Checks that the labels of a one-column (binary) output are 0 or 1.

    Integer, boolean and floating labels are accepted (0.0 and 1.0 are the classes). Concrete
    labels are checked on the host; traced labels get a `jax.experimental.checkify` check (a
    no-op unless the caller is checkified), as in `check_labels`.

    Raises:
        ValueError: naming ``where`` and the offending values, for concrete labels other than
            0 and 1 (NaN included).
    """
    expected = f"{where}: labels of a one-column (binary) output must be 0 or 1"
    if isinstance(labels, jax.core.Tracer):
        bad = (labels != 0) & (labels != 1)
        first_bad = _first_where(labels, bad)
        checkify.check(~jnp.any(bad), expected + ", got label {label}.", label=first_bad, debug=True)
        return
    values = host_values(labels)
    bad = values[(values != 0) & (values != 1)]
    if bad.size:
        raise ValueError(f"{expected}, got {bad.size} label(s) that are not: {_listed(bad)}.")


def check_probabilities(values, where: str) -> None:
    """Checks that probabilities (a SoftMax or Sigmoid output) lie in [0, 1].

    Concrete values are checked on the host; traced ones get a `checkify` check (a no-op
    unless checkified; the losses also make such a row's loss NaN, see `jaxdl.losses`).

    Raises:
        ValueError: naming ``where`` and the extreme values, for concrete values outside
            [0, 1] (beyond a few machine epsilons of their dtype) or NaN.
    """
    expected = (f"{where}: expected probabilities in [0, 1] (e.g. a SoftMax or Sigmoid output; for logits use "
                f"softmax_cross_entropy)")
    if isinstance(values, jax.core.Tracer):
        checkify.check(jnp.all(probabilities_valid(values)), expected + ", got values from {low} to {high}.",
                       low=jnp.min(values, initial=0), high=jnp.max(values, initial=1), debug=True)
        return
    array = host_values(values)
    if array.size and not np.all(np.asarray(probabilities_valid(array))):
        finite = array[np.isfinite(array)]
        span = f"from {finite.min():g} to {finite.max():g}" if finite.size else "no finite value"
        nan = " and NaN" if np.isnan(array).any() else ""
        raise ValueError(f"{expected}, got values {span}{nan}.")


def without_value_checks(function):
    """``function`` with the `checkify` value checks of its trace discharged and dropped.

    The losses' in-trace checks (`check_labels`, `check_probabilities`) compile to nothing,
    but they are JAX effects: a jitted function that carries one is dispatched by JAX's Python
    path with runtime tokens instead of its C++ fast path, about 0.4 ms more per call on this
    project's CPUs (a small MLP's train step: 519 against 89 microseconds, 2026-12-07). The
    jitted train step checks its labels on the host before the call (`jaxdl.make_train_step`),
    so it runs without them; a function traced inside the caller's own ``checkify`` should
    not be wrapped, since its checks would then be dropped.

    Returns:
        A function of the same positional arguments that returns ``function``'s outputs.
    """
    def unchecked(*args):
        return checkify.checkify(function, errors=checkify.user_checks)(*args)[1]

    unchecked.__name__ = getattr(function, "__name__", "unchecked")
    unchecked.__doc__ = getattr(function, "__doc__", None)
    return unchecked


def probabilities_valid(values):
    """Elementwise: does ``values`` lie in [0, 1], up to 4 machine epsilons of its dtype? (NaN: False)."""
    dtype = values.dtype if jnp.issubdtype(values.dtype, jnp.floating) else jnp.float32
    tolerance = 4 * float(jnp.finfo(dtype).eps)
    return (values >= -tolerance) & (values <= 1 + tolerance)


def as_labels(labels):
    """Python lists and tuples of numbers (nested too) as a NumPy array; anything else as it is.

    Labels given as ``[0, 1, 2]`` then work wherever an array does (a jitted step would
    otherwise see a pytree of scalars). A tuple or list holding arrays (a pytree of labels,
    e.g. ``(targets, weights)``) is returned unchanged.
    """
    if isinstance(labels, (list, tuple)) and labels and all(
            isinstance(leaf, numbers.Number) for leaf in jax.tree.leaves(labels)):
        return np.asarray(labels)
    return labels


def host_values(labels) -> np.ndarray:
    """The values of concrete labels as a NumPy array, fetched from the device if needed.

    A jax.Array that spans several processes (a global batch on a multi-process mesh) gives
    this process's shards (replicated shards repeat, which does not matter for range checks).
    """
    if isinstance(labels, jax.Array) and not labels.is_fully_addressable:
        shards = [np.ravel(np.asarray(shard.data)) for shard in labels.addressable_shards]
        return np.concatenate(shards) if shards else np.zeros(0, labels.dtype)
    return np.asarray(labels)


def check_labels_for_outputs(labels, outputs_shape: tuple, where: str, *, float_binary: bool = True) -> None:
    """Host check of concrete class labels against a model's outputs, before a step runs.

    ``outputs_shape`` is the model's output shape; only its axes after the batch are compared,
    so ``labels`` may be a process's rows of a global batch. Checked: integer labels without the
    class axis (values in [0, classes), `check_labels`) and the labels of a one-column (binary)
    output, with or without its column (values 0 or 1, `check_binary_labels`): integer or
    boolean ones always, float ones only with ``float_binary`` (the caller's loss is a
    classifier's, `jaxdl.losses.is_classification_loss`; with a squared error they are a
    regression's targets). Anything else (multi-class one-hot labels, pytrees, tracers,
    layouts the loss will refuse) is left to the loss.

    Raises:
        ValueError: as `check_labels` and `check_binary_labels`.
    """
    labels = as_labels(labels)
    if isinstance(labels, jax.core.Tracer) or not isinstance(labels, (np.ndarray, jax.Array)) or labels.ndim < 1:
        return
    rows, outputs_rows = tuple(labels.shape[1:]), tuple(outputs_shape[1:])
    kind = labels.dtype.kind  # (np.issubdtype costs microseconds per call)
    if not outputs_rows or kind not in "biuf":
        return
    classes = outputs_rows[-1]
    if classes == 1 and rows in (outputs_rows, outputs_rows[:-1]):
        if kind in "biu" or float_binary:  # else float labels of one column are a regression's targets
            check_binary_labels(labels, where)
    elif rows == outputs_rows[:-1] and kind in "iu":
        check_labels(labels, classes, where)


def _first_where(values, mask):
    """The first element of traced ``values`` where ``mask`` holds (0 if none), without indexing
    (a gather or an arg-max would fail at trace time for an axis of size 0 under `jax.vmap`)."""
    flat, flat_mask = jnp.ravel(values), jnp.ravel(mask)
    positions = jnp.arange(flat.size)
    first = jnp.min(jnp.where(flat_mask, positions, flat.size), initial=flat.size)
    return jnp.sum(jnp.where(positions == first, flat, jnp.zeros_like(flat)))


def _listed(values: np.ndarray) -> str:
    shown = np.unique(values)
    return ", ".join(map(str, shown[:10].tolist())) + (", ..." if shown.size > 10 else "")
