"""Running a cell over a sequence: plain `lax.scan` autodiff, and the fused reverse pass.

Both take time-major inputs ``xs`` (T, B, F) and a carry tuple of (B, H) arrays, and return
``(hs, final_carry)`` with ``hs`` (T, B, H) aligned with ``xs`` (also when ``reverse``).

* `scan_sequence`: ``lax.scan`` over the cell's ``forward``; gradients by JAX autodiff. The
  reference: simple and supports every transformation (forward mode included).
* `fused_sequence`: the same forward scan under a `jax.custom_vjp`. Autodiff through a scan
  computes, at every step, the input gradient and the outer products x_t^T dz_t and
  h_{t-1}^T dz_t, and carries two weight-sized running sums through the loop. The fused
  reverse scan keeps only the step's pre-activation gradients dz_t and does a single matrix
  product per step (dz_t w_hh^T); after the loop, over all T*B rows at once::

      dw_ih = X^T dZ_x,   dw_hh = H_prev^T dZ_h,   db = sum_rows dZ_x,   dX = dZ_x w_ih^T

  Same math, so values and gradients agree with `scan_sequence` to rounding
  (tests/test_recurrent.py). Reverse mode only: `jax.jvp`/`jax.jacfwd` need `scan_sequence`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxdl.layers.recurrent.cells import previous


def scan_sequence(cell, params, xs, carry0, *, reverse: bool = False, unroll: int = 1):
    """Runs ``cell`` over ``xs`` (T, B, F) from ``carry0``; returns ``(hs, final_carry)``."""

    def step(carry, x_t):
        carry, outputs = cell.forward(params, carry, x_t)
        return carry, outputs[0]

    carry, hs = lax.scan(step, tuple(carry0), xs, reverse=reverse, unroll=unroll)
    return hs, carry


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _fused(cell, reverse, unroll, params, xs, carry0):
    return scan_sequence(cell, params, xs, carry0, reverse=reverse, unroll=unroll)


def _fused_forward(cell, reverse, unroll, params, xs, carry0):
    carry, (hs, *residuals) = lax.scan(
        functools.partial(cell.forward, params), carry0, xs, reverse=reverse, unroll=unroll)
    return (hs, carry), (params, xs, carry0, hs, tuple(residuals))


def _fused_backward(cell, reverse, unroll, saved, cotangents):
    params, xs, carry0, hs, residuals = saved
    dhs, dcarry = cotangents
    steps = (dhs,) + tuple(cell.backward_inputs(hs, residuals, carry0, reverse))
    dcarry0, dzs = lax.scan(
        functools.partial(cell.backward, params["w_hh"].T), tuple(dcarry), steps,
        reverse=not reverse, unroll=unroll)
    rows = xs.shape[0] * xs.shape[1]
    dz_x = dzs[0].reshape(rows, -1)
    dz_h = dzs[-1].reshape(rows, -1)
    h_prev = previous(hs, carry0[0], reverse).reshape(rows, -1)
    grads = {
        "w_ih": xs.reshape(rows, -1).T @ dz_x,
        "w_hh": h_prev.T @ dz_h,
        "b": jnp.sum(dz_x, axis=0),
        **cell.extra_grads(dz_h, hs.shape[-1]),
    }
    dxs = (dz_x @ params["w_ih"].T).reshape(xs.shape)
    return grads, dxs, dcarry0


_fused.defvjp(_fused_forward, _fused_backward)


def fused_sequence(cell, params, xs, carry0, *, reverse: bool = False, unroll: int = 1):
    """`scan_sequence` with the fused reverse pass (see the module docstring).

    ``params`` must hold exactly the cell's parameters (their gradients are returned as one
    dict with the same keys).
    """
    return _fused(cell, reverse, unroll, params, xs, tuple(carry0))
