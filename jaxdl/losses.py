"""Losses: the exercise's cross-entropy on probabilities and a stable one on logits.

Both accept one-hot labels of the prediction's shape (batch, classes) or integer class
labels of shape (batch,). ``reduction`` is "sum" over the batch (the exercise's convention,
the default) or "mean". Predictions need a class axis (the last one): 1-D predictions are
refused (reshape a vector of probabilities with ``p[:, None]``).

Binary classification. A one-column output (batch, 1) is a binary classifier: its column is
the probability (for `cross_entropy`) or the logit (for `softmax_cross_entropy`) of class 1.
Its labels are 0 or 1, of shape (batch,) or (batch, 1), integer, boolean or floating;
`cross_entropy` is the binary cross-entropy -[y ln(p + eps) + (1 - y) ln(1 - p + eps)],
`softmax_cross_entropy` the sigmoid cross-entropy -[y log_sigmoid(z) + (1 - y) log_sigmoid(-z)]
(stable for any logit), and `correct_predictions`/`accuracy` threshold the column: p > 0.5
(``threshold=0.0`` for logits) predicts class 1. (The softmax of one column is 1 whatever the
logit, so the multi-class formulas would give a constant loss and an accuracy of 1.)

Label values. Integer labels must lie in [0, classes) (0 or 1 for a one-column output): an
out-of-range label would read a clamped or wrapped-around class (a NaN loss, or -1 silently
meaning the last class). Concrete labels are checked on the host (a ValueError naming the
function, the class count and the bad values). Under `jax.jit` the values are not known at
trace time; the losses then carry a `jax.experimental.checkify` check that costs nothing
unless the function is checkified::

    from jax.experimental import checkify
    error, loss = checkify.checkify(jax.jit(jaxdl.cross_entropy))(probabilities, labels)
    error.throw()   # raises checkify.JaxRuntimeError naming the first bad label, if any

One-hot labels of a multi-class output are not range-checked.

Never a negative loss. `cross_entropy` needs probabilities in [0, 1] (up to 4 machine epsilons):
concrete ones outside are a ValueError (logits passed by mistake); traced ones get a checkify
check and make their example's loss NaN (which `jaxdl.fit` reports as divergence), as do traced
binary labels other than 0 and 1. A per-example loss is never below 0 (-ln(1 + eps) is taken
as 0).

Precision. Both losses compute in float32 or wider (`jaxdl.precision.upcast`): bfloat16 or
float16 predictions give a float32 loss, float32 and float64 ones a loss of their own dtype.
cross_entropy's default eps is the machine epsilon of that dtype: bfloat16's own (2^-7) would
cap one example's loss at -ln(2^-7) ~ 4.85, float32's caps it at ~15.9 (float64's at ~36.0).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.precision import upcast
from jaxdl.validation import (
    as_labels, check_binary_labels, check_labels, check_probabilities, probabilities_valid)


class _Targets(NamedTuple):
    """Labels resolved against the predictions: ``kind`` is "binary", "one_hot" or "index"."""

    kind: str
    labels: jax.Array


def _targets(name: str, predictions: jax.Array, labels) -> _Targets:
    """Resolves ``labels`` for ``predictions`` (with a class axis), with shape, dtype and value checks."""
    if predictions.ndim < 2:
        raise ValueError(
            f"{name}: expected predictions with a class axis, (batch, classes) (a binary classifier's one "
            f"column: (batch, 1)), got shape {tuple(predictions.shape)}; reshape 1-D probabilities with "
            f"p[:, None].")
    labels = as_labels(labels)
    dtype = labels.dtype if hasattr(labels, "dtype") else np.asarray(labels).dtype
    if not (jnp.issubdtype(dtype, jnp.number) or dtype == jnp.bool_):
        raise TypeError(f"{name}: labels must be numbers, got dtype {dtype}.")
    labels = labels if isinstance(labels, jax.core.Tracer) else jnp.asarray(labels)
    shape, classes = tuple(predictions.shape), predictions.shape[-1]
    if classes == 1 and tuple(labels.shape) in (shape, shape[:-1]):
        check_binary_labels(labels, name)
        return _Targets("binary", labels.reshape(shape[:-1]))
    if tuple(labels.shape) == shape:
        return _Targets("one_hot", labels)
    if tuple(labels.shape) == shape[:-1]:
        if not jnp.issubdtype(labels.dtype, jnp.integer):
            raise TypeError(
                f"{name}: labels of shape {tuple(labels.shape)} must be integer class indices, got dtype "
                f"{labels.dtype}.")
        check_labels(labels, classes, name)
        return _Targets("index", labels)
    raise ValueError(
        f"{name}: labels must be one-hot with the predictions' shape {shape} or integer classes of shape "
        f"{shape[:-1]}, got shape {tuple(labels.shape)}.")


def _true_class_values(values: jax.Array, targets: _Targets) -> jax.Array:
    """values[..., true class] for one-hot or integer labels."""
    if targets.kind == "one_hot":
        return jnp.sum(values * targets.labels.astype(values.dtype), axis=-1)
    return jnp.take_along_axis(values, targets.labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


def _binary_labels_valid(labels: jax.Array) -> jax.Array:
    return (labels == 0) | (labels == 1)


def _reduce(name: str, per_example: jax.Array, reduction: str) -> jax.Array:
    if reduction == "sum":
        return jnp.sum(per_example)
    if reduction == "mean":
        return jnp.mean(per_example)
    raise ValueError(f"{name}: reduction must be 'sum' or 'mean', got {reduction!r}.")


def _into_unit_interval(p: jax.Array) -> jax.Array:
    """``p`` with values a rounding error outside [0, 1] put on its ends (gradient 1 inside)."""
    return jnp.where(p > 1, jnp.ones_like(p), jnp.where(p < 0, jnp.zeros_like(p), p))


def cross_entropy(probabilities, labels, *, eps=None, reduction: str = "sum") -> jax.Array:
    """The exercise's loss: sum over the batch of -ln(p_true + eps); binary for one column.

    A one-column output is a binary classifier (see the module docstring): the loss is then
    -[y ln(p + eps) + (1 - y) ln(1 - p + eps)] per example.

    Args:
        probabilities: (batch, classes), for example a SoftMax output, or (batch, 1), a
            Sigmoid output. More leading axes (e.g. time) are allowed; the classes are last.
        labels: one-hot (batch, classes) or integer (batch,); for one column, 0 or 1 of shape
            (batch,) or (batch, 1), any numeric dtype. Python lists work too.
        eps: added inside the log; default the machine epsilon of the dtype the loss is
            computed in (the exercise's np.finfo(float).eps in float64, float32's for float32,
            bfloat16 and float16 probabilities).
        reduction: "sum" (default) or "mean" over the batch.

    Returns:
        The loss, a scalar >= 0 (NaN for traced probabilities outside [0, 1] or binary labels
        other than 0 and 1).

    Raises:
        ValueError: for 1-D probabilities, labels of a wrong shape, concrete integer labels
            outside [0, classes), concrete binary labels other than 0 and 1, concrete
            probabilities outside [0, 1] or an unknown reduction. Under jit, see the module
            docstring for the checkify check of the values.
        TypeError: for non-integer labels of shape (batch,) with several classes, or labels
            that are not numbers.
    """
    probabilities = upcast(probabilities)
    if eps is None:
        eps = jnp.finfo(probabilities.dtype).eps
    targets = _targets("cross_entropy", probabilities, labels)
    check_probabilities(probabilities, "cross_entropy")
    if targets.kind == "binary":
        p = probabilities[..., 0]
        y = targets.labels.astype(p.dtype)
        q = _into_unit_interval(p)
        per_example = -(y * jnp.log(q + eps) + (1 - y) * jnp.log(1 - q + eps))
        valid = probabilities_valid(p) & _binary_labels_valid(targets.labels)
    else:
        true = _true_class_values(probabilities, targets)
        per_example = -jnp.log(_into_unit_interval(true) + eps)
        valid = probabilities_valid(true)
    per_example = jnp.where(valid, jnp.maximum(per_example, 0), jnp.full_like(per_example, jnp.nan))
    return _reduce("cross_entropy", per_example, reduction)


def softmax_cross_entropy(logits, labels, *, reduction: str = "sum") -> jax.Array:
    """Cross-entropy of softmax(logits), computed stably as logsumexp(logits) - logit_true.

    Use it on the model's pre-softmax output instead of SoftMax + `cross_entropy`. For one
    logit column (a binary classifier, see the module docstring) it is the sigmoid
    cross-entropy -[y log_sigmoid(z) + (1 - y) log_sigmoid(-z)], stable for any logit.
    Same label and reduction conventions as `cross_entropy`.

    Returns:
        The loss, a scalar >= 0 (NaN for traced binary labels other than 0 and 1).

    Raises:
        ValueError, TypeError: as `cross_entropy` (integer labels outside [0, classes)
            included; under jit, use checkify as the module docstring shows); logits may have
            any value.
    """
    logits = upcast(logits)
    targets = _targets("softmax_cross_entropy", logits, labels)
    if targets.kind == "binary":
        z = logits[..., 0]
        y = targets.labels.astype(z.dtype)
        per_example = -(y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z))
        per_example = jnp.where(_binary_labels_valid(targets.labels), jnp.maximum(per_example, 0),
                                jnp.full_like(per_example, jnp.nan))
    else:
        per_example = jnp.maximum(-_true_class_values(jax.nn.log_softmax(logits, axis=-1), targets), 0)
    return _reduce("softmax_cross_entropy", per_example, reduction)


cross_entropy.binary_threshold = 0.5
softmax_cross_entropy.binary_threshold = 0.0


def binary_threshold(loss_fn) -> float:
    """The threshold of a one-column output that the outputs of ``loss_fn`` imply.

    0.0 for a loss on logits (`softmax_cross_entropy`), 0.5 for one on probabilities
    (`cross_entropy`, and any function that does not say otherwise). A loss function tells
    its own with a ``binary_threshold`` attribute; `functools.partial` objects are looked
    through.
    """
    while isinstance(loss_fn, functools.partial):
        if hasattr(loss_fn, "binary_threshold"):
            break
        loss_fn = loss_fn.func
    return float(getattr(loss_fn, "binary_threshold", 0.5))


def is_classification_loss(loss_fn) -> bool:
    """Whether ``loss_fn`` is a classifier's loss: one that says its ``binary_threshold``
    (`cross_entropy`, `softmax_cross_entropy`, and any function given that attribute;
    `functools.partial` objects are looked through).

    `jaxdl.evaluate` reports the accuracy of a one-column output with float labels only for
    such a loss: with any other (e.g. a squared error) the labels are regression targets.
    """
    while isinstance(loss_fn, functools.partial) and not hasattr(loss_fn, "binary_threshold"):
        loss_fn = loss_fn.func
    return hasattr(loss_fn, "binary_threshold")


def accuracy(predictions, labels, *, threshold: float = 0.5) -> jax.Array:
    """Fraction of rows whose arg-max equals the true class (one-hot or integer labels).

    For a one-column output, the fraction of rows where ``p > threshold`` matches the label
    (see `correct_predictions`).

    Raises:
        ValueError, TypeError: as `correct_predictions`.
    """
    return jnp.mean(correct_predictions(predictions, labels, threshold=threshold))


def correct_predictions(predictions, labels, *, threshold: float = 0.5) -> jax.Array:
    """A boolean per row: does the arg-max equal the true class (one-hot or integer labels)?

    A one-column output (batch, 1) is a binary classifier: a row predicts class 1 where its
    column is above ``threshold`` (0.5 for probabilities; pass 0.0 for logits), and its label
    is 0 or 1, of shape (batch,) or (batch, 1).

    Args:
        predictions: (batch, classes) probabilities or logits (more leading axes allowed).
        labels: as for `cross_entropy`.
        threshold: the decision threshold of a one-column output.

    Returns:
        A boolean array of the predictions' shape without the class axis.

    Raises:
        ValueError: for 1-D predictions, labels of a wrong shape or (concrete) integer labels
            outside [0, classes) or binary labels other than 0 and 1, as for the losses (under
            jit: the checkify check of the module docstring).
        TypeError: as for the losses.
    """
    predictions = jnp.asarray(predictions)
    targets = _targets("accuracy", predictions, labels)
    if targets.kind == "binary":
        return (predictions[..., 0] > threshold) == (targets.labels == 1)
    labels = jnp.argmax(targets.labels, axis=-1) if targets.kind == "one_hot" else targets.labels
    return jnp.argmax(predictions, axis=-1) == labels


def per_example_losses(loss_fn, outputs, labels) -> jax.Array:
    """The loss of each example, shape (batch,): the mean over its steps of ``loss_fn`` on one step alone.

    One convention for every reduction. A step is one row the loss judges: outputs (batch,
    classes) or (batch, 1) have one step per example, and an example's loss is ``loss_fn`` on
    a batch of that one example. Sequence outputs (batch, T, ...) whose labels are one array of
    shape (batch, T, ...) have T steps per example: the example's loss is the mean over its T
    steps of ``loss_fn`` on each step alone (a batch of one row). So a loss that sums over batch
    and steps (`cross_entropy`'s default) and one that averages (``reduction="mean"``) give
    the same value, the loss per step, never T times it; `jaxdl.evaluate`'s "loss" and
    `jaxdl.fit`'s ``train_loss`` are its mean over the examples. Labels that are a pytree
    (e.g. ``(targets, weights)`` or the lengths of `jaxdl.masked_sequence_loss`) are not split:
    the example's loss is ``loss_fn`` on that example alone, reduced over its steps as the loss
    does (use a mean over the valid steps for the same convention).
    """
    labels = as_labels(labels)

    def one(output, label):
        return loss_fn(output[None], jax.tree.map(lambda leaf: leaf[None], label))

    if jnp.shape(outputs)[0] == 0:  # no example: nothing to map (vmap over 0 rows breaks the checks)
        row = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(jnp.shape(leaf)[1:], jnp.result_type(leaf)),
                           (outputs, labels))
        return jnp.zeros((0,), jax.eval_shape(one, *row).dtype)
    if _has_steps(outputs, labels):  # per step, then the mean over each example's steps
        return jnp.mean(jax.vmap(jax.vmap(one))(outputs, labels), axis=1)
    return jax.vmap(one)(outputs, labels)


def _has_steps(outputs, labels) -> bool:
    """Whether ``outputs`` are sequence outputs (batch, T, ...) with one array of labels (batch, T, ...)."""
    return (isinstance(labels, (jax.Array, np.ndarray)) and jnp.ndim(outputs) >= 3 and jnp.ndim(labels) >= 2
            and tuple(jnp.shape(labels)[:2]) == tuple(jnp.shape(outputs)[:2]))
