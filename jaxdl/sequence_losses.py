"""Losses over padded sequences: padding steps masked out by each example's length.

For outputs (batch, T, ...) of a recurrent model fed a `jaxdl.SequenceBatch` (padded at the
end, step t of example b valid when ``t < lengths[b]``), the loss is taken over the valid
steps only: padded steps contribute nothing to the value and nothing to the gradient,
whatever their outputs and labels hold (padding labels may be any value, -1 included).

Conventions: the loss per step is ``loss_fn`` of that step alone; ``reduction="sum"`` sums it
over every valid step of the batch, ``"mean"`` averages it over the valid steps (the sum
divided by ``sum(lengths)``; 0 for a batch without valid steps). With every length equal to T
both equal the plain loss over the (batch, T) steps with the same reduction, e.g.
``jaxdl.softmax_cross_entropy(logits, labels, reduction="mean")``.

In a training step the lengths travel with the labels, ``labels = (targets, lengths)``::

    step = jaxdl.make_train_step(
        model, lambda logits, labels: jaxdl.masked_sequence_cross_entropy(logits, *labels), optimizer)
    train_state, metrics = step(train_state, jaxdl.SequenceBatch(x, lengths), (targets, lengths))
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.losses import per_example_losses, softmax_cross_entropy
from jaxdl.precision import upcast
from jaxdl.validation import check_labels

_REDUCTIONS = ("sum", "mean")


def masked_sequence_loss(loss_fn: Callable, outputs, labels, lengths, *, reduction: str = "sum") -> jax.Array:
    """``loss_fn`` over the valid steps of padded sequences (see the module docstring).

    Args:
        loss_fn: a loss ``loss_fn(outputs, labels) -> scalar`` over a batch of rows, e.g.
            `jaxdl.softmax_cross_entropy`; it is applied to each step alone.
        outputs: (batch, T, ...), e.g. logits (batch, T, classes).
        labels: (batch, T, ...): integer classes (batch, T) or one-hot (batch, T, classes).
            Integer labels at padded steps are replaced by 0 before ``loss_fn`` sees them, so
            any padding value works.
        lengths: (batch,) integers in [0, T].
        reduction: "sum" (default) or "mean" over the valid steps.

    Returns:
        The loss, a scalar in the loss function's dtype.

    Raises:
        TypeError: for non-integer lengths.
        ValueError: for outputs without a time axis, labels or lengths that do not match them,
            concrete lengths outside [0, T], or an unknown reduction.
    """
    where = "masked_sequence_loss" if loss_fn is not softmax_cross_entropy else "masked_sequence_cross_entropy"
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{where}: reduction must be one of {list(_REDUCTIONS)}, got {reduction!r}.")
    outputs = jnp.asarray(outputs)
    labels = labels if isinstance(labels, jax.core.Tracer) else jnp.asarray(labels)
    mask = _valid_steps(where, outputs, labels, lengths)
    batch, steps = mask.shape
    if jnp.issubdtype(labels.dtype, jnp.integer) and labels.ndim == 2:
        labels = jnp.where(mask, labels, jnp.zeros_like(labels))
        if not isinstance(labels, jax.core.Tracer):  # per step below, the labels are traced
            check_labels(labels, outputs.shape[-1], where)
    per_step = per_example_losses(
        loss_fn, outputs.reshape((batch * steps,) + outputs.shape[2:]),
        labels.reshape((batch * steps,) + labels.shape[2:])).reshape(batch, steps)
    per_step = upcast(per_step)
    total = jnp.sum(jnp.where(mask, per_step, jnp.zeros_like(per_step)))
    if reduction == "sum":
        return total
    count = jnp.sum(mask).astype(total.dtype)
    return total / jnp.maximum(count, jnp.ones_like(count))


def masked_sequence_cross_entropy(logits, labels, lengths, *, reduction: str = "sum") -> jax.Array:
    """`jaxdl.softmax_cross_entropy` over the valid steps of padded sequences.

    sum (or mean) over b and t < lengths[b] of logsumexp(logits[b, t]) - logits[b, t, labels[b, t]].

    Args:
        logits: (batch, T, classes), the model's pre-softmax outputs.
        labels: integer classes (batch, T) (any value at padded steps) or one-hot
            (batch, T, classes).
        lengths: (batch,) integers in [0, T].
        reduction: "sum" (default) or "mean" over the valid steps.

    Returns:
        The loss, a scalar (float32 or wider).

    Raises:
        TypeError, ValueError: as `masked_sequence_loss`, and as `jaxdl.softmax_cross_entropy`
            for labels outside [0, classes) at valid steps.

    Example:
        >>> logits = jnp.zeros((2, 3, 4))
        >>> float(masked_sequence_cross_entropy(logits, jnp.array([[0, 1, 2], [3, -1, -1]]),
        ...                                     jnp.array([3, 1]), reduction="mean"))  # ln 4
        1.3862943649291992
    """
    return masked_sequence_loss(softmax_cross_entropy, logits, labels, lengths, reduction=reduction)


def _valid_steps(where: str, outputs, labels, lengths) -> jax.Array:
    """The (batch, T) mask of valid steps, after checking shapes and lengths."""
    if outputs.ndim < 3:
        raise ValueError(f"{where}: outputs must be (batch, time, ...) with a class axis, got shape "
                         f"{tuple(outputs.shape)}.")
    if tuple(labels.shape[:2]) != tuple(outputs.shape[:2]) or labels.ndim not in (2, outputs.ndim):
        raise ValueError(f"{where}: labels must be (batch, time) classes or one-hot like the outputs "
                         f"{tuple(outputs.shape)}, got shape {tuple(labels.shape)}.")
    dtype = jnp.result_type(lengths)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{where}: lengths must be integers, got dtype {dtype}.")
    batch, steps = outputs.shape[:2]
    if tuple(jnp.shape(lengths)) != (batch,):
        raise ValueError(f"{where}: lengths must have shape (batch,) = ({batch},), got shape "
                         f"{tuple(jnp.shape(lengths))}.")
    if not isinstance(lengths, jax.core.Tracer):
        values = np.asarray(lengths)  # NumPy: concrete even inside a jit that closes over the lengths
        if values.size and (int(values.min()) < 0 or int(values.max()) > steps):
            raise ValueError(f"{where}: lengths must lie in [0, {steps}], got values from {int(values.min())} to "
                             f"{int(values.max())}.")
    return jnp.arange(steps)[None, :] < jnp.asarray(lengths)[:, None]
