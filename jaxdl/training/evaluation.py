"""`evaluate`: mean loss per example and accuracy over batches, carrying the model's state."""

from __future__ import annotations

import functools
import math
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.layers.recurrent.memory import memory_for_batch, reset_memory
from jaxdl.losses import binary_threshold, correct_predictions, per_example_losses
from jaxdl.training.data import as_batch
from jaxdl.training.parallel import global_rows, shard_batch
from jaxdl.validation import as_labels, check_labels_for_outputs


@functools.partial(jax.jit, static_argnums=2)
def _correct_count(outputs, labels, threshold: float):
    return jnp.sum(correct_predictions(outputs, labels, threshold=threshold), dtype=jnp.int32)


def _positions(outputs, labels) -> int:
    """How many predictions `correct_predictions` judges for these shapes (known without running it)."""
    return _positions_for(jax.ShapeDtypeStruct(outputs.shape, outputs.dtype),
                          jax.ShapeDtypeStruct(labels.shape, labels.dtype))


@functools.lru_cache(maxsize=64)
def _positions_for(outputs: jax.ShapeDtypeStruct, labels: jax.ShapeDtypeStruct) -> int:
    return math.prod(jax.eval_shape(correct_predictions, outputs, labels).shape)


@functools.partial(jax.jit, static_argnums=0)
def _summed_example_losses(loss_fn, outputs, labels):
    return jnp.sum(per_example_losses(loss_fn, outputs, labels))


def evaluate(eval_step: Callable, params, state, batches: Iterable, loss_fn: Callable | None = None, *,
             reset: bool = True, threshold: float | None = None) -> dict:
    """Mean loss per example and accuracy of the model over ``batches``, in evaluation mode.

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

    A one-column output is a binary classifier (`jaxdl.correct_predictions`): a row predicts
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
            batch: the reported loss is the mean over examples of ``loss_fn`` on each example
            alone (`jaxdl.losses.per_example_losses`), so "sum" and "mean" report the same.
        reset: zero the memorized states before the first batch.
        threshold: the decision threshold of a one-column output (default: see above).

    Returns:
        ``{"accuracy": float or None, "loss": float or None, "count": int}``; count is the
        number of examples (batch rows); accuracy counts every predicted position (rows, or
        rows x time steps for sequence outputs) and is None when labels are not an array.

    Raises:
        ValueError: when ``batches`` is empty or all its batches have no rows; for labels out
            of range (naming the bad values) or of a wrong shape.
    """
    state = reset_memory(state) if reset else state
    threshold = (0.5 if loss_fn is None else binary_threshold(loss_fn)) if threshold is None else float(threshold)
    # Per-batch counts and loss sums stay on the device until the end: fetching each one would
    # wait for its batch before the next is dispatched. Summed on the host (in float64).
    corrects, losses, positions, count, seen = [], [], 0, 0, 0
    for item in batches:
        batch = as_batch(item)
        seen += 1
        if batch.reset:
            state = reset_memory(state)
        rows = _rows(batch.x)
        if rows == 0:
            continue
        state = memory_for_batch(state, global_rows(getattr(eval_step, "mesh", None), rows))
        result = eval_step(params, state, batch.x)
        outputs, state = result if isinstance(result, tuple) else (result, state)
        labels = _global_labels(eval_step, as_labels(batch.labels), outputs.shape)
        count += int(outputs.shape[0])
        if _is_array(labels):
            corrects.append(_correct_count(outputs, labels, threshold))
            positions += _positions(outputs, labels)
        if loss_fn is not None:
            losses.append(_summed_example_losses(loss_fn, outputs, labels))
    if count == 0:
        raise ValueError("evaluate: batches was empty." if not seen else
                         f"evaluate: batches gave {seen} batch(es), all of 0 rows: expected at least one example.")
    corrects, losses = jax.device_get((corrects, losses))
    correct, total_loss = sum(int(c) for c in corrects), sum(float(v) for v in losses)
    return {"accuracy": correct / positions if positions else None,
            "loss": total_loss / count if loss_fn is not None else None, "count": count}


def _global_labels(eval_step: Callable, labels, outputs_shape: tuple):
    """Checks integer ``labels`` against the outputs; shards them like the outputs of a mesh eval step."""
    check_labels_for_outputs(labels, outputs_shape, "evaluate")  # compares the axes after the batch
    mesh = getattr(eval_step, "mesh", None)
    return labels if mesh is None else shard_batch(mesh, labels, "evaluate", "labels")


def _rows(x) -> int:
    """The batch size of an input (its first leaf's leading axis; 1 for a scalar)."""
    leaves = jax.tree.leaves(x)
    return int(np.shape(leaves[0])[0]) if leaves and np.ndim(leaves[0]) else 1


def _is_array(labels) -> bool:
    return isinstance(labels, (np.ndarray, jax.Array))
