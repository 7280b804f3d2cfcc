"""Running a cell over a sequence: plain `lax.scan` autodiff, and the fused derivative.

Both take time-major inputs ``xs`` (T, B, F) and a carry tuple of (B, H) arrays, and return
``(hs, final_carry)`` with ``hs`` (T, B, H) aligned with ``xs`` (also when ``reverse``).

* `scan_sequence`: ``lax.scan`` over the cell's ``forward``; derivatives by JAX autodiff. The
  reference.
* `fused_sequence`: the same forward scan under a `jax.custom_jvp` whose tangent is arranged
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

  Forward mode (`jax.jvp`, `jax.jacfwd`), Hessian-vector products and `jax.hessian` work
  through the same rule. Same math as `scan_sequence`: values and derivatives agree to
  rounding (tests/test_recurrent.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jaxdl.layers.recurrent.cells import previous


def scan_sequence(cell, params, xs, carry0, *, reverse: bool = False, unroll: int = 1):
    """Runs ``cell`` over ``xs`` (T, B, F) from ``carry0``; returns ``(hs, final_carry)``."""

    def step(carry, x_t):
        carry, outputs = cell.forward(params, carry, x_t)
        return carry, outputs[0]

    carry, hs = lax.scan(step, tuple(carry0), xs, reverse=reverse, unroll=unroll)
    return hs, carry


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _fused(cell, reverse, unroll, params, xs, carry0):
    return scan_sequence(cell, params, xs, carry0, reverse=reverse, unroll=unroll)


def _is_zero(tangent) -> bool:
    return isinstance(tangent, SymbolicZero)


def _sum_terms(terms):
    terms = [t for t in terms if t is not None]
    return sum(terms[1:], terms[0]) if terms else None


def _rows_times(a, w):
    """``a`` (T, B, K) @ ``w`` (K, N) as one (T*B, K) matrix product, so that its transpose is
    one as well (a 3-D contraction transposes into a slower contraction over two axes)."""
    return (a.reshape(-1, a.shape[-1]) @ w).reshape(a.shape[:-1] + (w.shape[-1],))


def _projection_tangents(cell, params, dparams, xs, dxs, h_prev):
    """The tangent terms that do not depend on the previous step: (dZ_x, dZ_h), (T, B, G*H).

    ``dZ_x`` is the input projection's (dX w_ih + X dw_ih + db), ``dZ_h`` the hidden
    projection's (H_prev dw_hh, plus GRU's ``b_hn``). Cells whose hidden projection enters the
    same pre-activation as the input projection (Elman, LSTM) get them summed into ``dZ_x``
    and ``dZ_h = None``. A term whose tangent is zero is skipped; an all-zero result is zeros.
    """
    x_terms = [
        None if _is_zero(dxs) else _rows_times(dxs, params["w_ih"]),
        None if _is_zero(dparams["w_ih"]) else _rows_times(xs, dparams["w_ih"]),
        None if _is_zero(dparams["b"]) else dparams["b"],
    ]
    h_terms = [
        None if _is_zero(dparams["w_hh"]) else _rows_times(h_prev, dparams["w_hh"]),
        *cell.hidden_bias_tangents(params, dparams),
    ]
    shape = xs.shape[:2] + (params["w_ih"].shape[1],)

    def stacked(terms):
        total = _sum_terms(terms)
        return jnp.zeros(shape, xs.dtype) if total is None else jnp.broadcast_to(total, shape)

    if cell.separate_hidden_projection:
        return stacked(x_terms), stacked(h_terms)
    return stacked(x_terms + h_terms), None


class _TransposedWeights:
    """``w_hh`` kept as its transpose; ``h @ weights`` is ``h w_hh``."""

    def __init__(self, transposed):
        self.transposed = transposed

    def __rmatmul__(self, h):
        return lax.dot_general(h, self.transposed, (((h.ndim - 1,), (1,)), ((), ())))


def _fused_jvp(cell, reverse, unroll, primals, tangents):
    params, xs, carry0 = primals
    dparams, dxs, dcarry0 = tangents
    carry, (hs, *coefficients) = lax.scan(
        functools.partial(cell.forward, params), carry0, xs, reverse=reverse, unroll=unroll)
    h_prev = previous(hs, carry0[0], reverse)
    dz_x, dz_h = _projection_tangents(cell, params, dparams, xs, dxs, h_prev)
    dcarry0 = tuple(jnp.zeros_like(c) if _is_zero(d) else d for c, d in zip(carry0, dcarry0))
    if cell.tangent_reads_outputs:
        coefficients = (hs, *coefficients)
    inputs = (dz_x,) + (() if dz_h is None else (dz_h,)) + tuple(coefficients)
    # The step multiplies by w_hh written as (w_hh^T)^T: its transpose, the reverse pass, then
    # multiplies by the stored w_hh^T, an ordinary product, inside the loop.
    dcarry, dhs = lax.scan(
        functools.partial(cell.tangent_step, _TransposedWeights(params["w_hh"].T)), dcarry0, inputs,
        reverse=reverse, unroll=unroll)
    return (hs, carry), (dhs, dcarry)


_fused.defjvp(_fused_jvp, symbolic_zeros=True)


def fused_sequence(cell, params, xs, carry0, *, reverse: bool = False, unroll: int = 1):
    """`scan_sequence` with the fused derivative (see the module docstring).

    ``params`` must hold exactly the cell's parameters.
    """
    return _fused(cell, reverse, unroll, params, xs, tuple(carry0))
