"""Sequence lengths: padded batches whose examples end at different steps.

A batch of sequences of unequal length is padded at the end to a common T and passed with its
lengths as one input, ``SequenceBatch(x, lengths)``: ``x`` (batch, T, features), ``lengths``
(batch,) integers in [0, T]. Step t of example b is valid when ``t < lengths[b]``. The
recurrent layers (`RNN`, `LSTM`, `GRU`, `Stacked`, `Bidirectional`) accept it wherever they
accept ``x``, within the layer contract ``apply(params, state, x, *, key, train)``:

* outputs at padded steps are zeros;
* the state is carried only over valid steps: the final state (the output with
  ``return_sequences=False``, and a memorized state) is each example's state at its own last
  valid step, and a reverse pass starts at each example's last valid step;
* the result equals running every example alone, unpadded, at its own length.

`masked_sequence` is the recurrence over a mask: a `lax.scan` whose step keeps the previous
carry where the step is padding (plain autodiff: every transformation works); the layers'
``implementation="scan"`` runs it. The default ``"fused"`` runs the same recurrence with its
fused derivative (`jaxdl.kernels.recurrent.fused_sequence` with ``valid``), tested equal to it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdl.sequence_batch import SequenceBatch


def split_input(layer, x):
    """``(x, lengths)`` of a layer's input: a `SequenceBatch` or a plain array (lengths None).

    Raises:
        TypeError: for non-integer lengths.
        ValueError: for a rank-2 ``x`` with lengths, lengths not of shape (batch,), or concrete
            lengths outside [0, T].
    """
    if not isinstance(x, SequenceBatch):
        return x, None
    x, lengths = x
    check_lengths(layer, lengths, jnp.shape(x))
    return x, jnp.asarray(lengths)


def check_lengths(layer, lengths, shape: tuple) -> None:
    """Checks ``lengths`` against an input of ``shape`` (batch, T, features) for ``layer``.

    Concrete lengths are range-checked on the host; traced ones are not (a length above T acts
    as T, a negative one as 0).
    """
    owner = f"{layer!r}"
    dtype = jnp.result_type(lengths)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{owner}: lengths must be integers, got dtype {dtype}.")
    if len(shape) != 3:
        raise ValueError(
            f"{owner}: lengths need input of layout (batch, time, features), got shape {tuple(shape)}.")
    if tuple(jnp.shape(lengths)) != (shape[0],):
        raise ValueError(
            f"{owner}: lengths must have shape (batch,) = ({shape[0]},), got shape {tuple(jnp.shape(lengths))}.")
    if isinstance(lengths, jax.core.Tracer):
        return
    values = np.asarray(lengths)
    if values.size and (values.min() < 0 or values.max() > shape[1]):
        raise ValueError(
            f"{owner}: lengths must lie in [0, {shape[1]}] (the time axis of the input of shape "
            f"{tuple(shape)}), got values from {values.min()} to {values.max()}.")


def step_mask(lengths, steps: int) -> jax.Array:
    """(batch, steps) booleans: True where step t of example b is valid (t < lengths[b])."""
    return jnp.arange(steps)[None, :] < jnp.asarray(lengths)[:, None]


def time_major_mask(lengths, steps: int) -> jax.Array:
    """(steps, batch, 1) booleans: `step_mask` laid out as the recurrences' time-major inputs."""
    return jnp.swapaxes(step_mask(lengths, steps), 0, 1)[..., None]


def masked_sequence(cell, params, xs, lengths, carry0, *, reverse: bool = False, unroll: int = 1):
    """Runs ``cell`` over ``xs`` (T, B, F) with lengths (B,); returns ``(hs, final_carry)``.

    ``hs`` (T, B, H) is zero at padded steps; the carry passes padded steps unchanged, so the
    final carry of a forward scan is each example's state after its last valid step, and a
    reverse scan (steps T-1, ..., 0) starts from ``carry0`` at each example's step
    ``lengths - 1``.
    """
    mask = time_major_mask(lengths, xs.shape[0])

    def step(carry, inputs):
        x_t, valid = inputs
        new, outputs = cell.forward(params, carry, x_t)
        carry = tuple(jnp.where(valid, n, c) for n, c in zip(new, carry))
        return carry, jnp.where(valid, outputs[0], jnp.zeros_like(outputs[0]))

    carry, hs = lax.scan(step, tuple(carry0), (xs, mask), reverse=reverse, unroll=unroll)
    return hs, carry
