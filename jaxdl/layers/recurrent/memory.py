"""`reset_memory`: zero the memorized recurrent states of a whole model at once."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdl.core import path_names

#: State leaves that hold a memorized recurrent state (hidden and LSTM cell state).
MEMORY_NAMES = frozenset({"h", "c"})


def reset_memory(state, mask=None):
    """Returns ``state`` with every memorized recurrent state set to zeros.

    Works on a whole model's state tree (e.g. `Serial`'s, or ``TrainState.state``): the leaves
    named ``h`` and ``c`` (those of `RNN`, `LSTM` and `GRU` with ``memorize=True``) are reset,
    every other leaf (batch-norm statistics, ...) is returned unchanged. Shapes and dtypes are
    kept, so a jitted step does not retrace. Jit-compatible.

    Args:
        state: a state tree.
        mask: None to reset every sequence, or a boolean array (batch,): True resets that
            example's state (its sequence ended inside the batch; the next chunk starts a new
            one), False keeps it.

    Returns:
        The new state tree.

    Raises:
        ValueError: if ``mask`` is not one-dimensional or its length differs from a memorized
            state's batch size.
        TypeError: if ``mask`` is not boolean.

    Example:
        >>> state = jaxdl.reset_memory(state)                         # new sequences everywhere
        >>> state = jaxdl.reset_memory(state, mask=ended)             # ended: (batch,) bool
    """
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.dtype != jnp.bool_:
            raise TypeError(f"reset_memory: mask must be boolean (True = reset), got dtype {mask.dtype}.")
        if mask.ndim != 1:
            raise ValueError(f"reset_memory: mask must have shape (batch,), got shape {tuple(mask.shape)}.")

    def reset(path, leaf):
        names = path_names(path)
        if not names or names[-1] not in MEMORY_NAMES:
            return leaf
        if mask is None:
            return jnp.zeros_like(leaf)
        if jnp.ndim(leaf) < 1 or leaf.shape[0] != mask.shape[0]:
            raise ValueError(
                f"reset_memory: mask has shape {tuple(mask.shape)} but the memorized state "
                f"{'/'.join(names)} has shape {tuple(jnp.shape(leaf))} (batch first).")
        keep = jnp.logical_not(mask).reshape((-1,) + (1,) * (leaf.ndim - 1))
        return jnp.where(keep, leaf, jnp.zeros_like(leaf))

    return jax.tree_util.tree_map_with_path(reset, state)


def memory_for_batch(state, batch: int):
    """Returns ``state`` with every memorized recurrent state fitted to ``batch`` rows.

    For evaluation over batches of unequal size (e.g. a validation set whose last batch is
    smaller than the training batch): row i continues row i. A memorized state of more rows is
    cut to its first ``batch`` rows, one of fewer rows is followed by zero rows (new sequences);
    every other leaf is returned unchanged. Each row of a smaller batch thus gets exactly the
    output it would get in a batch of the memorized size (rows do not interact in evaluation).
    Training keeps refusing a batch of another size (the layers' check).

    Args:
        state: a state tree (e.g. a `Serial`'s).
        batch: the number of rows of the next input.

    Returns:
        The new state tree (the same object when nothing needs fitting).
    """
    def fits(path, leaf):
        names = path_names(path)
        return not names or names[-1] not in MEMORY_NAMES or jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] == batch

    def fit(path, leaf):
        if fits(path, leaf):
            return leaf
        rows = jnp.shape(leaf)[0]
        if rows > batch:
            return leaf[:batch]
        return jnp.concatenate([leaf, jnp.zeros((batch - rows, *jnp.shape(leaf)[1:]), jnp.result_type(leaf))])

    if all(fits(path, leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(state)):
        return state
    return jax.tree_util.tree_map_with_path(fit, state)
