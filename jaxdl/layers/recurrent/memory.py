"""`reset_memory` and `memory_for_batch`: the memorized recurrent states of a whole model at once.

Which state is memory is what the layers declare (`jaxdl.Layer.memory`, walked by
`jaxdl.memory_mask`): RNN and GRU ``h``, LSTM ``h`` and ``c``, a custom recurrent layer's own
keys; never a leaf merely named ``h`` or ``c`` (a custom layer's running statistic).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdl.core import Layer, memory_mask


def _memory_flags(where: str, model, state):
    """`jaxdl.memory_mask` of ``model`` over ``state``, with a TypeError for a model that is not a layer."""
    if not isinstance(model, Layer):
        raise TypeError(
            f"{where}: model must be the jaxdl layer whose state this is (the model comes first: "
            f"{where}(model, state, ...)), got {type(model).__name__}.")
    return memory_mask(model, state)


def reset_memory(model: Layer, state, mask=None):
    """Returns ``state`` with every memorized recurrent state of ``model`` set to zeros.

    Works on a whole model's state tree (e.g. `Serial`'s, or ``TrainState.state``): the leaves
    the layers declare as memory (`jaxdl.Layer.memory`: those of `RNN`, `LSTM` and `GRU` with
    ``memorize=True``, or of a custom layer) are reset, every other leaf (batch-norm
    statistics, a custom running statistic, ...) is returned unchanged. Shapes and dtypes are
    kept, so a jitted step does not retrace. Jit-compatible (``model`` is static).

    Args:
        model: the layer (usually a `Serial`) whose state this is.
        state: its state tree.
        mask: None to reset every sequence, or a boolean array (batch,): True resets that
            example's state (its sequence ended inside the batch; the next chunk starts a new
            one), False keeps it.

    Returns:
        The new state tree.

    Raises:
        TypeError: if ``model`` is not a jaxdl layer (e.g. the old call ``reset_memory(state)``),
            or ``mask`` is not boolean.
        ValueError: if ``mask`` is not one-dimensional or its length differs from a memorized
            state's batch size.

    Example:
        >>> state = jaxdl.reset_memory(model, state)                  # new sequences everywhere
        >>> state = jaxdl.reset_memory(model, state, mask=ended)      # ended: (batch,) bool
    """
    flags = _memory_flags("reset_memory", model, state)
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.dtype != jnp.bool_:
            raise TypeError(f"reset_memory: mask must be boolean (True = reset), got dtype {mask.dtype}.")
        if mask.ndim != 1:
            raise ValueError(f"reset_memory: mask must have shape (batch,), got shape {tuple(mask.shape)}.")

    def reset(path, leaf, memory):
        if not memory:
            return leaf
        if mask is None:
            return jnp.zeros_like(leaf)
        if jnp.ndim(leaf) < 1 or leaf.shape[0] != mask.shape[0]:
            raise ValueError(
                f"reset_memory: mask has shape {tuple(mask.shape)} but the memorized state "
                f"{jax.tree_util.keystr(path, simple=True, separator='/')} has shape {tuple(jnp.shape(leaf))} "
                f"(batch first).")
        keep = jnp.logical_not(mask).reshape((-1,) + (1,) * (leaf.ndim - 1))
        return jnp.where(keep, leaf, jnp.zeros_like(leaf))

    return jax.tree_util.tree_map_with_path(reset, state, flags)


def memory_for_batch(model: Layer, state, batch: int):
    """Returns ``state`` with every memorized recurrent state of ``model`` fitted to ``batch`` rows.

    For evaluation over batches of unequal size (e.g. a validation set whose last batch is
    smaller than the training batch): row i continues row i. A memorized state (as the layers
    declare it, `jaxdl.Layer.memory`) of more rows is cut to its first ``batch`` rows, one of
    fewer rows is followed by zero rows (new sequences); every other leaf is returned unchanged.
    Each row of a smaller batch thus gets exactly the output it would get in a batch of the
    memorized size (rows do not interact in evaluation). Training keeps refusing a batch of
    another size (the layers' check).

    Args:
        model: the layer (usually a `Serial`) whose state this is.
        state: its state tree.
        batch: the number of rows of the next input.

    Returns:
        The new state tree (the same object when nothing needs fitting).

    Raises:
        TypeError: if ``model`` is not a jaxdl layer.
    """
    flags = _memory_flags("memory_for_batch", model, state)

    def fits(leaf, memory):
        return not memory or jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] == batch

    def fit(leaf, memory):
        if fits(leaf, memory):
            return leaf
        rows = jnp.shape(leaf)[0]
        if rows > batch:
            return leaf[:batch]
        return jnp.concatenate([leaf, jnp.zeros((batch - rows, *jnp.shape(leaf)[1:]), jnp.result_type(leaf))])

    if all(jax.tree.leaves(jax.tree.map(fits, state, flags))):
        return state
    return jax.tree.map(fit, state, flags)
