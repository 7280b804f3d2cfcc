"""`fused_sequence`: a recurrent cell over a sequence, with a fused derivative (the recurrent fast path).

Both take time-major inputs ``xs`` (T, B, F) and a carry tuple of (B, H) arrays, and return
``(hs, final_carry)`` with ``hs`` (T, B, H) aligned with ``xs`` (also when ``reverse``).

* `jaxdl.layers.recurrent.sequence.scan_sequence`: ``lax.scan`` over the cell's ``forward``;
  derivatives by JAX autodiff. The reference, in the layers.
* `fused_sequence` (here): the same forward scan under a `jax.custom_jvp` whose tangent is arranged
  so that its transpose (reverse mode) is the fast reverse pass. Autodiff through a scan
  computes, at every step, the input gradient and the outer products x_t^T dz_t and
  h_{t-1}^T dz_t, and carries two weight-sized running sums through the loop. Here the
  tangent takes every term that does not depend on the previous step's tangent out of the
  loop, as single matrix products over all T*B rows::

      dZ = dX w_ih + X dw_ih + db + H_prev dw_hh          (before the loop)
      dz_t = dZ_t + dh_{t-1} w_hh;  (dh_t, dc_t) = cell's linear step   (in the loop)

  The loop is linear in (dZ, dh, dc) with per-step coefficients that the forward pass
  computes and stacks (`jaxdl.layers.recurrent.cells`). Transposed by JAX, the loop does one matrix
  product per step (dz_t w_hh^T) and returns the stacked pre-activation gradients dZ*, and
  the products before the loop become, after it::

      dw_ih = X^T dZ*,   dw_hh = H_prev^T dZ*,   db = sum_rows dZ*,   dX = dZ* w_ih^T

  When the stacked gradients dZ* would be large (``STACKED_GRADIENT_BYTES``), the tangent
  loop runs over blocks of up to ``BLOCK_STEPS`` time steps instead: each block computes its
  dZ rows as one product over its k*B rows, then steps through them, so the reverse pass
  accumulates dw_ih, dw_hh and db once per block and never stacks dZ* for all T steps (see
  `_block_length`; the measurements are in benchmarks/RESULTS_rnn.md).

  Forward mode (`jax.jvp`, `jax.jacfwd`), Hessian-vector products and `jax.hessian` work
  through the same rule. Same math as `scan_sequence`: values and derivatives agree to
  rounding (tests/test_recurrent.py, tests/test_kernels.py). Not platform-dependent: the
  rule is the same program on every backend.

  Padded batches (``valid``, from the layers' sequence lengths): the forward step keeps the
  carry and gives a zero output at a padded step, and so does the tangent step with the
  carry's tangent; h_{t-1} in the projection terms is the carry's h, which after padding is
  not the (zero) output before it. Equal to `jaxdl.layers.recurrent.lengths.masked_sequence`
  in values and derivatives (tests/test_recurrent_wrappers.py).

The cell is an object with ``forward``, ``tangent_step``, ``hidden_bias_tangents``,
``separate_hidden_projection`` and ``tangent_reads_outputs``
(`jaxdl.layers.recurrent.cells`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero


def _previous(seq, first, reverse: bool):
    """``seq`` (T, ...) shifted one step along the scan direction, ``first`` filling the gap."""
    if seq.shape[0] == 0:
        return seq
    if reverse:
        return jnp.concatenate([seq[1:], first[None]], axis=0)
    return jnp.concatenate([first[None], seq[:-1]], axis=0)


def _forward_step(cell, params, masked: bool):
    """The scan's step: the cell's ``forward``; with ``masked``, over ``(x_t, valid_t)``, keeping
    the carry and giving a zero output where ``valid_t`` (B, 1) is False (padding)."""
    if not masked:
        return functools.partial(cell.forward, params)

    def step(carry, inputs):
        x_t, valid_t = inputs
        new, (h, *coefficients) = cell.forward(params, carry, x_t)
        carry = tuple(jnp.where(valid_t, n, c) for n, c in zip(new, carry))
        return carry, (jnp.where(valid_t, h, jnp.zeros_like(h)), *coefficients)

    return step


def _scan_inputs(xs, valid):
    return xs if valid is None else (xs, valid)


def _hidden_before(hs, first, valid, reverse: bool):
    """The carry's h before each step: the previous step's output, ``first`` before the first
    step (in the scan's direction). With ``valid`` (padding at each sequence's end), where the
    previous step was padding its output is zero but the carry is still ``first``: a reverse
    scan reaches a sequence's last valid step with the carry it started from."""
    before = _previous(hs, first, reverse)
    if valid is None:
        return before
    previous_valid = _previous(valid, jnp.ones(valid.shape[1:], bool), reverse)
    return jnp.where(previous_valid, before, first)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3))
def _fused(cell, reverse, unroll, block_steps, params, xs, carry0, valid):
    del block_steps  # only the derivative uses it
    forward = _forward_step(cell, params, valid is not None)

    def step(carry, inputs):
        carry, outputs = forward(carry, inputs)
        return carry, outputs[0]

    carry, hs = lax.scan(step, tuple(carry0), _scan_inputs(xs, valid), reverse=reverse, unroll=unroll)
    return hs, carry


def _is_zero(tangent) -> bool:
    return isinstance(tangent, SymbolicZero)


def _sum_terms(terms):
    terms = [t for t in terms if t is not None]
    return sum(terms[1:], terms[0]) if terms else None


def _weights(w):
    """``w`` (K, N) kept as its transpose, so that ``a @ _weights(w)`` is ``a w`` and its
    transpose (reverse mode) multiplies by the stored ``w^T``: an ordinary product in the loop."""
    return _TransposedWeights(w.T)


class _TransposedWeights:
    """``w`` kept as its transpose; ``a @ weights`` is ``a w``."""

    def __init__(self, transposed):
        self.transposed = transposed

    def __rmatmul__(self, a):
        return lax.dot_general(a, self.transposed, (((a.ndim - 1,), (1,)), ((), ())))


def _projection_tangents(cell, params, dparams, shape, dtype, dx, x, h_prev):
    """The tangent terms that do not depend on the previous step: (dz_x, dz_h), each ``shape``.

    Computed for a block of rows (k time steps of B sequences, stacked). ``dz_x`` is the input
    projection's (dx w_ih + x dw_ih + db), ``dz_h`` the hidden projection's (h_prev dw_hh, plus
    GRU's ``b_hn``). Cells whose hidden projection enters the same pre-activation as the input
    projection (Elman, LSTM) get them summed into ``dz_x`` and ``dz_h = None``. ``dx``, ``x``
    and ``h_prev`` are None where the tangent they multiply is zero (the term is skipped); an
    all-zero result is zeros.
    """
    x_terms = [
        None if dx is None else dx @ _weights(params["w_ih"]),
        None if x is None else x @ dparams["w_ih"],
        None if _is_zero(dparams["b"]) else dparams["b"],
    ]
    h_terms = [
        None if h_prev is None else h_prev @ dparams["w_hh"],
        *cell.hidden_bias_tangents(params, dparams),
    ]

    def summed(terms):
        total = _sum_terms(terms)
        return jnp.zeros(shape, dtype) if total is None else jnp.broadcast_to(total, shape)

    if cell.separate_hidden_projection:
        return summed(x_terms), summed(h_terms)
    return summed(x_terms + h_terms), None


#: Stacked pre-activation gradients (T, B, G*H) up to this size are kept whole (one block).
#: Measured with jaxlib 0.10.2 on AMD EPYC Zen 4/5 (family 25 model 17, family 26 model 2), a
#: KVM guest with glibc's malloc: benchmarks/RESULTS_rnn.md, "2026-12-02: the LSTM and GRU
#: step's page faults, and the tangent loop in blocks". Not yet measured on Intel Xeon.
STACKED_GRADIENT_BYTES = 8 * 2**20
#: Time steps per block above it (the last ``T % BLOCK_STEPS`` steps are one shorter block).
#: Same jaxlib, CPUs and measurements.
BLOCK_STEPS = 10


def _block_length(steps: int, batch: int, width: int, itemsize: int) -> int:
    """Time steps per block of the tangent loop: ``steps`` (one block) or ``BLOCK_STEPS``.

    One block is the layout of the module docstring: the products over all T*B rows outside
    the loop, dZ* stacked whole. Above ``STACKED_GRADIENT_BYTES`` of stacked gradients, blocks
    of ``BLOCK_STEPS`` steps (and one shorter block for the last ``T % BLOCK_STEPS`` steps)
    keep the step's temporaries small (memory and its traffic, not arithmetic); below it the
    per-block loop and sums cost more than they save.
    """
    if steps * batch * width * itemsize <= STACKED_GRADIENT_BYTES:
        return steps
    return min(steps, BLOCK_STEPS)


def _blocks(a, count: int, rows: bool):
    """``a`` (T, B, ...) as ``count`` blocks along time: (count, k*B, ...) when ``rows``, else
    (count, k, B, ...); without the leading axis for one block. A reshape: no copy."""
    if a is None:
        return None
    shape = (a.shape[0] * a.shape[1] // count,) if rows else (a.shape[0] // count, a.shape[1])
    return a.reshape(((count,) if count > 1 else ()) + shape + a.shape[2:])


def _parts(steps: int, k: int) -> list[tuple[int, int, int]]:
    """The sequence's parts in time order, ``(start, stop, steps per block)``: the first
    ``steps - steps % k`` steps in blocks of ``k``, then the rest as one shorter block."""
    full = steps - steps % k if k else steps
    if full in (0, steps):
        return [(0, steps, k if full else steps)]
    return [(0, full, k), (full, steps, steps - full)]


def _tangent_loop(cell, params, dparams, k, reverse, unroll, dcarry, projection_inputs, coefficients, dtype,
                  masked: bool):
    """The tangent loop over one part of the sequence in blocks of ``k`` steps; ``(dcarry, dhs)``.

    ``projection_inputs`` (dxs, xs, h_prev; None where skipped) and ``coefficients`` are the
    part's, time-major; ``dtype`` is the inputs' (of an all-zero projection tangent). With
    ``masked`` the last coefficient is the steps' validity (T, B, 1): a padded step keeps the
    carry's tangent and gives a zero output tangent, as the masked forward step.
    """
    steps, batch = coefficients[0].shape[:2]
    width = params["w_ih"].shape[1]
    count = steps // k if k else 1  # an empty sequence is one (empty) block
    # The step multiplies by w_hh written as (w_hh^T)^T: its transpose, the reverse pass, then
    # multiplies by the stored w_hh^T, an ordinary product, inside the loop.
    w_hh = _weights(params["w_hh"])

    def step(dcarry, inputs):
        if not masked:
            return cell.tangent_step(w_hh, dcarry, inputs)
        *inputs, valid_t = inputs
        new, dh = cell.tangent_step(w_hh, dcarry, tuple(inputs))
        new = tuple(jnp.where(valid_t, n, d) for n, d in zip(new, dcarry))
        return new, jnp.where(valid_t, dh, jnp.zeros_like(dh))

    def block(dcarry, inputs):
        projection, block_coefficients = inputs
        dz = _projection_tangents(cell, params, dparams, (k * batch, width), dtype, *projection)
        dz = tuple(d.reshape((batch, width) if k == 1 else (k, batch, width)) for d in dz if d is not None)
        if k == 1:  # one step per block: no inner loop (its inputs have no time axis)
            return step(dcarry, dz + block_coefficients)
        return lax.scan(step, dcarry, dz + block_coefficients, reverse=reverse, unroll=unroll)

    # Reshapes only: known operations inside the loop body (slicing a block's coefficients)
    # would make JAX stack their results as extra residuals.
    inputs = (tuple(_blocks(a, count, rows=True) for a in projection_inputs),
              tuple(_blocks(c, count, rows=k == 1) for c in coefficients))
    if count == 1:
        dcarry, dhs = block(dcarry, inputs)
    else:
        dcarry, dhs = lax.scan(block, dcarry, inputs, reverse=reverse)
    return dcarry, dhs.reshape((steps,) + dhs.shape[-2:])


def _fused_jvp(cell, reverse, unroll, k, primals, tangents):
    """The rule; ``k`` time steps per block of the tangent loop (`_block_length`).

    When ``k`` does not divide T, the last ``T % k`` steps are a part of their own, one shorter
    block: the forward scan runs over the two parts one after the other (in the scan's
    direction), so that each part's coefficients come out as arrays of their own (slicing them
    afterwards would copy them).
    """
    params, xs, carry0, valid = primals
    dparams, dxs, dcarry0, _ = tangents
    parts = _parts(xs.shape[0], k)
    masked = valid is not None
    forward_step = _forward_step(cell, params, masked)
    order = parts[::-1] if reverse else parts

    def piece(a, part):
        return a if len(parts) == 1 or a is None else a[part[0]:part[1]]

    carry, forward = carry0, {}
    for part in order:
        before = carry[0]  # h before the part's first step, in the scan's direction
        carry, (hs, *coefficients) = lax.scan(
            forward_step, carry, _scan_inputs(piece(xs, part), piece(valid, part)), reverse=reverse, unroll=unroll)
        forward[part] = (hs, coefficients, before)

    dcarry = tuple(jnp.zeros_like(c) if _is_zero(d) else d for c, d in zip(carry0, dcarry0))
    dhs = {}
    for part in order:
        hs, coefficients, before = forward[part]
        if cell.tangent_reads_outputs:
            coefficients = (hs, *coefficients)
        if masked:
            coefficients = (*coefficients, piece(valid, part))
        projection_inputs = (
            None if _is_zero(dxs) else piece(dxs, part),
            None if _is_zero(dparams["w_ih"]) else piece(xs, part),
            None if _is_zero(dparams["w_hh"]) else _hidden_before(hs, before, piece(valid, part), reverse),
        )
        dcarry, dhs[part] = _tangent_loop(cell, params, dparams, part[2], reverse, unroll, dcarry,
                                          projection_inputs, tuple(coefficients), xs.dtype, masked)

    def joined(arrays):
        return arrays[0] if len(arrays) == 1 else jnp.concatenate(arrays, axis=0)

    hs = joined([forward[part][0] for part in parts])
    return (hs, carry), (joined([dhs[part] for part in parts]), dcarry)


_fused.defjvp(_fused_jvp, symbolic_zeros=True)


def fused_sequence(cell, params, xs, carry0, *, reverse: bool = False, unroll: int = 1, valid=None):
    """`scan_sequence` with the fused derivative (see the module docstring).

    ``params`` must hold exactly the cell's parameters. ``valid``: None (every step valid), or
    (T, B, 1) booleans, True at the valid steps of each sequence, a prefix of its steps
    (sequences padded at the end): the recurrence of
    `jaxdl.layers.recurrent.lengths.masked_sequence` (padded steps keep the carry and give
    zero outputs) with this derivative.
    """
    steps, batch = xs.shape[:2]
    block_steps = _block_length(steps, batch, params["w_ih"].shape[1], jnp.dtype(xs.dtype).itemsize)
    return _fused(cell, reverse, unroll, block_steps, params, xs, tuple(carry0), valid)
