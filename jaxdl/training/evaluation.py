"""`evaluate`: mean loss per example, accuracy and the caller's metrics over batches, carrying
the model's state."""

from __future__ import annotations

import functools
import math
from typing import Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from jaxdl.layers.recurrent.memory import memory_for_batch, reset_memory
from jaxdl.losses import binary_threshold, correct_predictions, is_classification_loss, per_example_losses
from jaxdl.training.data import as_batch
from jaxdl.training.parallel import global_rows, shard_batch
from jaxdl.validation import as_labels, check_labels_for_outputs, without_value_checks


# `_correct_count` and `_summed_example_losses` run without the losses' checkify checks (labels
# are checked on the host first): with them, each call would take JAX's slow dispatch
# (`without_value_checks`). A metric's checks are kept, functionalized (`_summed_metric`).
@functools.partial(jax.jit, static_argnums=2)
def _correct_count(outputs, labels, threshold: float):
    correct = without_value_checks(lambda o, l: correct_predictions(o, l, threshold=threshold))(outputs, labels)
    return jnp.sum(correct, dtype=jnp.int32)


def _positions(outputs, labels) -> int:
    """How many predictions `correct_predictions` judges for these shapes (known without running it)."""
    return _positions_for(jax.ShapeDtypeStruct(outputs.shape, outputs.dtype),
                          jax.ShapeDtypeStruct(labels.shape, labels.dtype))


@functools.lru_cache(maxsize=64)
def _positions_for(outputs: jax.ShapeDtypeStruct, labels: jax.ShapeDtypeStruct) -> int:
    return math.prod(jax.eval_shape(correct_predictions, outputs, labels).shape)


@functools.partial(jax.jit, static_argnums=0)
def _summed_example_losses(loss_fn, outputs, labels):
    return jnp.sum(without_value_checks(functools.partial(per_example_losses, loss_fn))(outputs, labels))


#: Names a metric of the caller's cannot have (`evaluate`'s own results).
RESERVED_METRICS = ("loss", "accuracy", "count")


def check_metrics(metrics, where: str) -> dict[str, Callable]:
    """``metrics`` as a dict of name -> function, checked.

    Raises:
        TypeError: for something that is not a mapping of strings to callables.
        ValueError: for a name that is empty, not an identifier, or one of `RESERVED_METRICS`.
    """
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise TypeError(f"{where}: metrics must be a dict of name -> function(outputs, labels), got "
                        f"{type(metrics).__name__}.")
    for name, function in metrics.items():
        if not isinstance(name, str):
            raise TypeError(f"{where}: metric names must be strings, got {name!r}.")
        if not name.isidentifier() or name in RESERVED_METRICS:
            raise ValueError(f"{where}: a metric name must be an identifier other than {RESERVED_METRICS} (the "
                             f"history calls it 'validation_<name>'), got {name!r}.")
        if not callable(function):
            raise TypeError(f"{where}: metric {name!r} must be a function(outputs, labels) -> one value per "
                            f"example, got {type(function).__name__}.")
    return dict(metrics)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _summed_metric(name: str, function: Callable, outputs, labels):
    """The batch's sum of the metric's per-example values, and the `checkify` error of the
    metric's own checks (functionalized: an output, not a JAX effect; `evaluate` raises it)."""
    error, values = checkify.checkify(function, errors=checkify.user_checks)(outputs, labels)
    values = jnp.asarray(values)
    if values.ndim == 0 or values.shape[0] != outputs.shape[0]:
        raise ValueError(f"evaluate: metric {name!r} must return one value per example (shape ({outputs.shape[0]}, "
                         f"...) for a batch of {outputs.shape[0]}), got shape {tuple(values.shape)}.")
    return error, jnp.sum(jnp.mean(values.reshape(values.shape[0], -1).astype(jnp.float32), axis=1))


def _raise_failed_checks(checks: dict) -> None:
    """Raises a ValueError for the first metric with a failed `checkify` check ({name: [error per batch]})."""
    for name, errors in checks.items():
        for batch, error in enumerate(errors):
            message = error.get()
            if message is not None:
                raise ValueError(f"evaluate: metric {name!r} failed its check in batch {batch}: {message}")


def classification_labels(labels, outputs_shape: tuple, loss_fn: Callable | None = None) -> bool:
    """Whether ``labels`` are a classifier's (so accuracy means something) for outputs of that shape.

    Integer or boolean labels are; float labels are when they are 0/1 labels of a one-column
    output (with a classifier's loss, `jaxdl.losses.is_classification_loss`, or no loss), or
    one-hot (or probability) rows of the outputs' shape: values in [0, 1] summing to 1.
    Anything else is a regression target: no accuracy is reported for it.
    """
    if not isinstance(labels, (np.ndarray, jax.Array)):
        return False
    if not jnp.issubdtype(labels.dtype, jnp.inexact):
        return True
    values = np.asarray(labels, dtype=np.float64)
    if len(outputs_shape) >= 1 and outputs_shape[-1] == 1:
        classifier_loss = loss_fn is None or is_classification_loss(loss_fn)
        return classifier_loss and bool(np.all((values == 0) | (values == 1)))
    if values.shape != tuple(outputs_shape) or values.size == 0:
        return False
    return bool(np.all((values >= 0) & (values <= 1)) and np.allclose(values.sum(axis=-1), 1.0, atol=1e-3))


def _model_of(eval_step: Callable, model, state):
    """The model whose memorized states `evaluate` resets: ``model``, else the eval step's own
    (`jaxdl.make_eval_step` records it); None for an empty state (nothing to reset).

    Raises:
        ValueError: for a non-empty state without either.
    """
    model = getattr(eval_step, "model", None) if model is None else model
    if model is None and jax.tree.leaves(state):
        raise ValueError("evaluate: the eval step does not say its model (make_eval_step's does), so the memorized "
                         "states in its state cannot be told apart; pass model=the model.")
    return model


def evaluate(eval_step: Callable, params, state, batches: Iterable, loss_fn: Callable | None = None, *,
             reset: bool = True, threshold: float | None = None,
             metrics: Mapping[str, Callable] | None = None, model=None) -> dict:
    """Mean loss per example, accuracy and ``metrics`` of the model over ``batches``, in evaluation mode.

    The state is carried from batch to batch: evaluation starts from ``state`` with every
    memorized recurrent state zeroed (``reset=True``, `jaxdl.reset_memory`), each batch gets
    the state the previous one returned, and a `jaxdl.training.Batch` with ``reset=True``
    zeroes it again (new sequences). So consecutive chunks of long sequences are evaluated as
    one pass, the way truncated BPTT trained them; models without memorized states are not
    affected (batch-norm statistics do not change in evaluation mode).

    With an eval step built on a mesh (``make_eval_step(model, mesh=mesh)``), each batch is
    this process's rows of a global batch (the whole batch in one process); the labels are
    sharded like the outputs and the counts and sums are over the global batch, the same in
    every process.

    Accuracy is reported for a classifier's labels only (`classification_labels`: integer,
    one-hot or 0/1 labels); for a regression target it is None, never a meaningless number.

    A one-column output with such labels is a binary classifier (`jaxdl.correct_predictions`): a row predicts
    class 1 where its column is above ``threshold``, by default the one ``loss_fn`` implies
    (`jaxdl.losses.binary_threshold`: 0.0 for `jaxdl.softmax_cross_entropy`'s logits, 0.5 for
    probabilities). Integer labels, and the 0/1 labels of a one-column output, are checked on
    the host against the outputs before they are used. A batch of no rows adds nothing and
    leaves the state as it is. A batch of another size than the memorized recurrent states (the
    partial last batch of a validation set) continues them row by row
    (`jaxdl.layers.recurrent.memory.memory_for_batch`): its rows are evaluated exactly as in a
    batch of the memorized size.

    Args:
        eval_step: ``eval_step(params, state, x) -> (outputs, new_state)`` from
            `jaxdl.make_eval_step`; a ``predict(params, state, x) -> outputs`` from
            `jaxdl.make_predict` also works (no state is carried then).
        params, state: the model's params and state (the state is not modified).
        batches: an iterable of (x, labels) or `Batch`; labels one-hot, integer or a pytree
            (Python lists of numbers are taken as arrays).
        loss_fn: optional ``loss_fn(outputs, labels) -> scalar`` with any reduction over the
            batch: the reported loss is the mean over examples of each example's loss
            (`jaxdl.losses.per_example_losses`: ``loss_fn`` on the example alone, and for
            sequence outputs (batch, T, ...) with labels (batch, T, ...) the mean over its steps
            of ``loss_fn`` on each step alone), so "sum" and "mean" report the same: the loss
            per example, or per step for sequences.
        reset: zero the memorized states before the first batch.
        threshold: the decision threshold of a one-column output (default: see above).
        metrics: name -> ``function(outputs, labels)`` returning one value per example (shape
            (batch,), or (batch, ...) averaged per example); jitted per batch. Each is reported
            as its mean over all examples under its name. Its `checkify.check`s (and those of
            the jaxdl losses it calls) are enforced: a failed one raises after the last batch.
        model: the model, whose layers declare which state is memorized (`jaxdl.Layer.memory`);
            by default the ``model`` attribute of an eval step from `jaxdl.make_eval_step`.
            Needed only for a non-empty state.

    Returns:
        ``{"accuracy": float or None, "loss": float or None, "count": int, <metric>: float...}``;
        count is the number of examples (batch rows); accuracy counts every predicted position
        (rows, or rows x time steps for sequence outputs) and is None when the labels are not a
        classifier's (a regression target, a pytree).

    Raises:
        ValueError: when ``batches`` is empty or all its batches have no rows; for labels out
            of range (naming the bad values) or of a wrong shape; for a metric that does not
            return one value per example, or a bad metric name; for a metric whose `checkify`
            check failed (naming it, the batch and the check's message).
        TypeError: for ``metrics`` that are not a dict of names to functions.
    """
    metrics = check_metrics(metrics, "evaluate")
    model = _model_of(eval_step, model, state)
    state = reset_memory(model, state) if reset and model is not None else state
    threshold = (0.5 if loss_fn is None else binary_threshold(loss_fn)) if threshold is None else float(threshold)
    # Per-batch counts and loss sums stay on the device until the end: fetching each one would
    # wait for its batch before the next is dispatched. Summed on the host (in float64).
    corrects, losses, positions, count, seen = [], [], 0, 0, 0
    sums, checks, classifier = {name: [] for name in metrics}, {name: [] for name in metrics}, True
    for item in batches:
        batch = as_batch(item)
        seen += 1
        if batch.reset and model is not None:
            state = reset_memory(model, state)
        rows = _rows(batch.x)
        if rows == 0:
            continue
        if model is not None:
            state = memory_for_batch(model, state, global_rows(getattr(eval_step, "mesh", None), rows))
        result = eval_step(params, state, batch.x)
        outputs, state = result if isinstance(result, tuple) else (result, state)
        local_labels = as_labels(batch.labels)
        classifier = classifier and classification_labels(local_labels, outputs.shape, loss_fn)
        labels = _global_labels(eval_step, local_labels, outputs.shape, loss_fn)
        count += int(outputs.shape[0])
        if classifier:
            corrects.append(_correct_count(outputs, labels, threshold))
            positions += _positions(outputs, labels)
        if loss_fn is not None:
            losses.append(_summed_example_losses(loss_fn, outputs, labels))
        for name, function in metrics.items():
            error, summed = _summed_metric(name, function, outputs, labels)
            checks[name].append(error)
            sums[name].append(summed)
    if count == 0:
        raise ValueError("evaluate: batches was empty." if not seen else
                         f"evaluate: batches gave {seen} batch(es), all of 0 rows: expected at least one example.")
    corrects, losses, sums, checks = jax.device_get((corrects, losses, sums, checks))
    _raise_failed_checks(checks)
    correct, total_loss = sum(int(c) for c in corrects), sum(float(v) for v in losses)
    return {"accuracy": correct / positions if positions and classifier else None,
            "loss": total_loss / count if loss_fn is not None else None, "count": count,
            **{name: sum(float(v) for v in values) / count for name, values in sums.items()}}


def _global_labels(eval_step: Callable, labels, outputs_shape: tuple, loss_fn: Callable | None):
    """Checks class ``labels`` against the outputs; shards them like the outputs of a mesh eval step."""
    classifier = loss_fn is None or is_classification_loss(loss_fn)
    check_labels_for_outputs(labels, outputs_shape, "evaluate", float_binary=classifier)  # axes after the batch
    mesh = getattr(eval_step, "mesh", None)
    return labels if mesh is None else shard_batch(mesh, labels, "evaluate", "labels")


def _rows(x) -> int:
    """The batch size of an input (its first leaf's leading axis; 1 for a scalar)."""
    leaves = jax.tree.leaves(x)
    return int(np.shape(leaves[0])[0]) if leaves and np.ndim(leaves[0]) else 1
