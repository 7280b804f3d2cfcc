"""`SequenceBatch`: a padded batch of sequences with each sequence's length.

It sits at the bottom of the import graph because the layer contract routes it: the layers
that use lengths declare ``takes_lengths = True`` (the recurrent layers, `Stacked`,
`Bidirectional`, `MultiHeadAttention`), and the composites (`Serial`, `Residual`, `Parallel`,
`Tied`, `MixedPrecision`) hand the lengths to those children only (`jaxdl.core.with_lengths`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax


class SequenceBatch(NamedTuple):
    """A padded batch of sequences and each sequence's length (a pytree: jit/vmap pass it).

    Step t of example b is valid when ``t < lengths[b]``; the layers that take lengths mask
    the rest (see `jaxdl.layers.recurrent.lengths`). Inside a `Serial`, the lengths reach
    every layer that takes them while the layers' outputs keep the input's leading (batch,
    time) axes, so ``Serial(Embedding(V, D), LSTM(H), FullyConnected(V))`` with a
    ``SequenceBatch(ids, lengths)`` masks the LSTM's padded steps; a model's output is a plain
    array (mask the loss with `jaxdl.masked_sequence_loss`).

    Attributes:
        x: (batch, T, ...) inputs (e.g. (batch, T, features), or (batch, T) token ids before
            an `Embedding`), padded at the end of the time axis.
        lengths: (batch,) integers in [0, T]: the valid steps of each example.

    Example:
        >>> x = jnp.zeros((2, 5, 3))
        >>> y, _ = jaxdl.LSTM(4).apply(params, {}, jaxdl.SequenceBatch(x, jnp.array([5, 2])))
    """

    x: jax.Array
    lengths: jax.Array
